"""The conversion pipeline: plan -> load -> fold -> [calibrate] -> convert -> verify -> publish.

plan.py        which (target, precision) artifacts a request builds, and where
convert.py     the conversion, step by step
verify.py      the parity gate again, on an existing artifact
int8.py        the calibration table for a conversion (computed or reused) and the simulated model
provenance.py  what an artifact records about itself: the manifest and the metadata in its files
"""
