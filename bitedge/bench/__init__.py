"""Latency under one protocol for every runtime.

protocol.py  warm-up, interleaved settled rounds, statistics, paired ratios, the machine record
run.py       ``bitedge bench``: artifacts and float models side by side; bench.json, .md and .png
"""
