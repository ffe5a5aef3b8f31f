"""``bitedge diagnose``: where an artifact starts to differ from the model it came from, layer by layer.

The artifact runs in its own runtime with every layer's output tapped (each target says how: extra graph
outputs in onnxruntime, ``add_outputs`` in OpenVINO, the Core ML emulator's values, a tapped twin program in
ExecuTorch), beside the float deploy graph and, for int8, the simulated-quantized model, on the same images.
Each layer is compared by its bitedge name (``bitedge.model.taps``):

- artifact vs simulated (int8): conversion fidelity; where it falls off is a conversion or runtime fault;
- simulated vs float (int8): what quantization itself costs, layer by layer;
- artifact vs float, where there is no simulated model (fp32, fp16, an int8 quantizer of the target's own):
  the conversion, and that quantizer.

Besides the first layer below a comparison's limit, the steepest single drop says whether a layer stands out
(a fault: tens of dB at one layer) or the difference grows gradually (rounding amplified by every layer, a few dB
each, as in a random-weight network).

    taps.py     the torch models' layer outputs (forward hooks), the tap order
    compare.py  per-layer statistics (cosine, SNR, max |Δ|) and where each comparison falls off
    run.py      the diagnosis: artifact, models, images, comparisons
    write.py    diagnose.json, diagnose.md and diagnose.png
"""
