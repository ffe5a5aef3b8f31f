"""``bitedge diagnose``: where an artifact starts to differ from the model it came from, layer by layer.

The artifact runs in its own runtime with every layer's output tapped (each target says how: extra graph
outputs in onnxruntime, ``add_outputs`` in OpenVINO, the Core ML emulator's values, a tapped twin program in
ExecuTorch), beside the float deploy graph and, for int8, the simulated-quantized model, on the same images.
Each layer is compared by its bitedge name (``bitedge.model.taps``):

- artifact vs simulated (int8): conversion fidelity; where it falls off is a conversion or runtime fault;
- simulated vs float (int8): what quantization itself costs, layer by layer;
- artifact vs float: both together (fp32 and fp16: the conversion alone).

    taps.py     the torch models' layer outputs (forward hooks), the tap order
    compare.py  per-layer statistics (cosine, SNR, max |Δ|) and where each comparison falls off
    run.py      the diagnosis: artifact, models, images, comparisons
    write.py    diagnose.json, diagnose.md and diagnose.png
"""
