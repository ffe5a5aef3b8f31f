"""Artifact directories: what bitedge writes, how it proves it wrote them, and how it checks them on use.

manifest.py    bitedge.json as typed records with a schema version (records.py parses them)
publish.py     built in a temp directory, renamed into place; locks; stale leftovers cleaned
ownership.py   what bitedge may replace: only what it can prove it wrote
integrity.py   file hashes and status checked before predict, bench and report use an artifact
"""
