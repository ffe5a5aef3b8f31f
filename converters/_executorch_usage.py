"""USAGE.md, written into every ExecuTorch artifact: how an Android app (Kotlin) runs ``model.pte``.

The app does bitedge's preprocessing itself (``preprocessing.json``): resize the shortest edge, center-crop,
then (unless the artifact folded it in) scale to 0..1 and normalize with the mean and std; CHW, float32.
"""

from __future__ import annotations

from bitedge.converters.base import ExportSpec
from bitedge.precisions import Precision


def usage_markdown(spec: ExportSpec, precision: Precision) -> str:
    height, width = spec.input_size
    batch = spec.batch or 1
    processor = spec.processor
    mean = processor.image_mean if processor is not None else [0.0, 0.0, 0.0]
    std = processor.image_std if processor is not None else [1.0, 1.0, 1.0]
    if spec.raw_pixel_input:
        pixel = "rgb[c].toFloat()  // 0..255: the normalization is folded into the model"
    else:
        pixel = "(rgb[c] / 255f - MEAN[c]) / STD[c]"
    quantized = (" The int8 quantization is inside the program: the app passes float pixels and reads float "
                 "logits, as with fp32.") if precision == Precision.INT8 else ""  # fmt: skip
    return f"""# Using this ExecuTorch program in an Android app

`model.pte`: BiT classifier, {precision}, input `({batch}, 3, {height}, {width})` float32 CHW, output
`({batch}, {len(spec.labels)})` logits; `labels.txt` lists the labels in output order. Built for ExecuTorch's
XNNPACK backend, which the standard AAR includes.{quantized}

Add the runtime (`build.gradle.kts`): `implementation("org.pytorch:executorch-android:<version>")`, the
version matching the `executorch` that wrote this program (see `bitedge.json` → `tool_versions`).

Preprocess as `preprocessing.json` says: resize the shorter side, center-crop to {width}x{height}, then per
channel:

```kotlin
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

val MEAN = floatArrayOf({", ".join(f"{m:.6f}f" for m in mean)})
val STD = floatArrayOf({", ".join(f"{s:.6f}f" for s in std)})

class BitClassifier(modelPath: String, private val labels: List<String>) {{
    private val module = Module.load(modelPath)  // e.g. a file copied from the app's assets

    /** pixels: the cropped {width}x{height} image as ARGB ints (Bitmap.getPixels), row by row. */
    fun classify(pixels: IntArray, topK: Int = 5): List<Pair<String, Float>> {{
        val input = FloatArray(3 * {height} * {width})
        for (i in pixels.indices) {{
            val p = pixels[i]
            val rgb = intArrayOf((p shr 16) and 0xFF, (p shr 8) and 0xFF, p and 0xFF)
            for (c in 0 until 3) input[c * {height} * {width} + i] = {pixel}
        }}
        val tensor = Tensor.fromBlob(input, longArrayOf(1, 3, {height}, {width}))
        val logits = module.forward(EValue.from(tensor))[0].toTensor().dataAsFloatArray
        val max = logits.maxOrNull() ?: 0f
        val exp = logits.map {{ kotlin.math.exp(it - max) }}
        val sum = exp.sum()
        return exp.indices.sortedByDescending {{ exp[it] }}.take(topK).map {{ labels[it] to exp[it] / sum }}
    }}
}}
```

The same program runs from C++ (`executorch::extension::Module`) and, on iOS, from the ExecuTorch Swift
package; the input and output are the same tensors.
"""
