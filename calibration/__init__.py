"""Calibration, installed as ``bitedge.calibration``: images -> preprocessing -> observers ->
CalibrationTable -> simulated-quantized model. Lands with the calibration/INT8 issue."""
