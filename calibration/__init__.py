"""Calibration, installed as ``bitedge.calibration``: images -> preprocessing -> observers ->
CalibrationTable -> simulated-quantized model. One table serves every target, so their int8 results are
comparable.

    sources.py    calibration data (folder, list file, .npy/.npz), sampling, manifest and its hash
    observers.py  per-tensor |x| statistics and the four range methods
    recipe.py     which layers get Q/DQ (every conv and the head) and ``--exclude``
    calibrate.py  the streaming pass over the deploy graph, and the table it yields
    table.py      CalibrationTable (JSON), reuse checks
    simulate.py   the simulated-quantized model, the int8 parity reference

Kept free of heavy imports: the CLI reads the method names from here.
"""

METHODS = ("minmax", "percentile", "entropy", "mse")
# Chosen by measurement on the demo model (benchmarks/results/int8_calibration.md): entropy gave the
# highest top-1 agreement and accuracy of the four.
DEFAULT_METHOD = "entropy"
