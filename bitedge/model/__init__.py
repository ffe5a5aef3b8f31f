"""The float reference: BiT's configuration, modules, checkpoint formats, preprocessing and presets.

config.py           BitConfig (transformers' fields and defaults, validated)
layers.py, blocks.py  weight-standardized convolutions, GroupNorm+ReLU, padding; the residual units, stages
modeling.py         BitModel, BitForImageClassification, BitBackbone
checkpoints/        safe readers, key maps (timm, original .npz), config inference from shapes
loading.py          load_model: any supported checkpoint or preset -> a model that records its source
demo.py             the small trained model bundled with bitedge, and its images (for that model only)
image_processor.py  BitImageProcessor: BiT's preprocessing, and the processor a conversion uses
presets.py          the released BiT architectures by name (seeded random weights)
summary.py          parameters, MACs and shapes, for ``bitedge inspect``
"""
