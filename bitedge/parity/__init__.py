"""The parity gate: run an artifact in its runtime on held-out images and compare it with the float model.

images.py    evaluation image sets (class folders give accuracy), streamed in batches
metrics.py   agreement, logit differences, cosine, SNR, accuracy; budgets; the parity report
gate.py      reference, simulated-quantized and artifact passes, and the report they give
"""
