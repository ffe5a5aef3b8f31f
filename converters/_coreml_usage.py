"""USAGE.md, written into every Core ML artifact: how an iOS or macOS app runs it with Vision.

BiT's preprocessing resizes the shortest edge and center-crops; Vision's ``.centerCrop`` option does the
same when the resize size equals the crop size. When the checkpoint resizes larger than it crops (e.g.
256 -> 224), the app must crop the center fraction first; the file says which case applies.
"""

from __future__ import annotations

from bitedge.converters.base import ExportSpec
from bitedge.precisions import Precision


def usage_markdown(spec: ExportSpec, precision: Precision, deployment: str, *, tensor_input: bool) -> str:
    height, width = spec.input_size
    lines = [
        "# Using this Core ML model in an app",
        "",
        f"`model.mlpackage`: BiT classifier, {precision}, {width}x{height} input, minimum deployment target "
        f"{deployment}. Drag it into Xcode; Xcode compiles it and generates a Swift class.",
        "",
    ]
    if tensor_input:
        lines += [
            "The input `pixel_values` is a (1, 3, H, W) Float32 `MLMultiArray` of *normalized* pixels "
            "(see `bitedge.json` → `preprocessing`); build it yourself and call `prediction(from:)`.",
            "The outputs are `classLabel` (String) and `classLabel_probs` ([String: Double]).",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "The input `image` is an RGB image; normalization happens inside the model. With Vision:",
        "",
        "```swift",
        "import CoreML",
        "import Vision",
        "",
        "let configuration = MLModelConfiguration()",
        "configuration.computeUnits = .all  // CPU, GPU and Neural Engine",
        "let coreMLModel = try MLModel(contentsOf: compiledModelURL, configuration: configuration)",
        "let request = VNCoreMLRequest(model: try VNCoreMLModel(for: coreMLModel)) { request, _ in",
        "    guard let best = (request.results as? [VNClassificationObservation])?.first else { return }",
        "    print(best.identifier, best.confidence)  // label, softmax probability",
        "}",
        "// BiT: resize the shortest edge, then crop the center square",
        "request.imageCropAndScaleOption = .centerCrop",
        "try VNImageRequestHandler(cgImage: photo, orientation: .up).perform([request])",
        "```",
        "",
    ]
    processor = spec.processor
    resize = processor.size.get("shortest_edge") if processor is not None else None
    if resize is not None and resize != min(height, width):
        fraction = min(height, width) / resize
        lines.append(
            f"This checkpoint resizes the shortest edge to {resize} and crops {width}x{height}: "
            f"`.centerCrop` alone crops less. Crop the central {fraction:.3f} of the shortest edge first "
            "(e.g. with `request.regionOfInterest`), then let Vision scale it."
        )
    else:
        lines.append("`.centerCrop` matches this checkpoint's preprocessing (resize and crop to the same size).")
    return "\n".join(lines) + "\n"
