"""The Core ML program emulator, checked against torch on models converted by plain coremltools.

None of these go through bitedge's converter: small torch models made of BiT's op set are converted with
``coremltools.convert`` directly, saved, read back by the emulator and compared with torch itself.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

ct = pytest.importorskip("coremltools")

from bitedge.converters._coreml_check import check_package  # noqa: E402
from bitedge.converters._coreml_emulator import Emulator, UnsupportedOpError  # noqa: E402
from bitedge.converters._coreml_package import MLPackage, PackageError  # noqa: E402


class PreActBlock(nn.Module):
    """A BiT unit in miniature: GN + ReLU, 1x1 projection of the pre-activated input, 3x3/2, residual add."""

    def __init__(self, channels: int = 16, out: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False)
        self.norm1 = nn.GroupNorm(4, channels)
        self.project = nn.Conv2d(channels, out, 1, stride=2, bias=False)
        self.conv = nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(8, out)
        self.head = nn.Linear(out, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.pad(self.stem(x), (1, 1, 1, 1)), 3, 2)  # BiT's stem: zero pad, then max-pool
        pre = F.relu(self.norm1(x))
        x = self.project(pre) + self.conv(pre)
        x = F.relu(self.norm2(x))
        return self.head(x.mean(dim=(2, 3)))


class OddShapes(nn.Module):
    """Asymmetric ("SAME"-style) padding, grouped and dilated convs, avg-pool, ceil-mode max-pool, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, bias=True)
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, (0, 1, 0, 1)))
        x = F.avg_pool2d(self.grouped(x), 2)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        return torch.softmax(x.flatten(1), dim=1)


def _convert(model: nn.Module, path: Path, *, shape: tuple[int, ...] = (1, 3, 32, 32), **kwargs: Any) -> MLPackage:
    kwargs = {"compute_precision": ct.precision.FLOAT32, "minimum_deployment_target": ct.target.iOS17, **kwargs}
    inputs = kwargs.pop("inputs", [ct.TensorType(name="x", shape=shape)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), torch.zeros(shape))
        mlmodel = ct.convert(traced, inputs=inputs, convert_to="mlprogram", **kwargs)
    mlmodel.save(str(path))
    return MLPackage(path)


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def _torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = model(torch.from_numpy(x)).numpy()
    return out


@pytest.mark.parametrize("model_class", [PreActBlock, OddShapes])
def test_fp32_programs_match_torch(tmp_path: Path, model_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = model_class()
    package = _convert(model, tmp_path / "m.mlpackage")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (output,) = Emulator(package, fp16=False).run({"x": x}).outputs.values()
    assert _relative_error(output, _torch(model, x)) <= 1e-4


def test_image_input_preprocessing_ops_are_executed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PreActBlock()
    image = ct.ImageType(name="image", shape=(1, 3, 32, 32), scale=1 / 127.5, bias=[-1, -1, -1])
    package = _convert(model, tmp_path / "m.mlpackage", inputs=[image])
    assert {"mul", "add"} <= set(package.op_histogram())
    raw = np.random.default_rng(1).integers(0, 256, (1, 3, 32, 32)).astype(np.float32)
    (output,) = Emulator(package, fp16=False).run({"image": raw}).outputs.values()
    assert _relative_error(output, _torch(model, raw / 127.5 - 1)) <= 1e-4


def test_fp16_program_is_rounded_as_typed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PreActBlock()
    package = _convert(model, tmp_path / "m.mlpackage", compute_precision=ct.precision.FLOAT16)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = _torch(model, x)
    (as_typed,) = Emulator(package, fp16=True).run({"x": x}).outputs.values()
    (ideal,) = Emulator(package, fp16=False).run({"x": x}).outputs.values()
    assert _relative_error(ideal, expected) <= 1e-3  # fp16 weights only
    assert 1e-4 < _relative_error(as_typed, expected) <= 2e-2  # fp16 rounding after every op shows


def test_groupnorm_overflow_in_fp16_is_flagged(tmp_path: Path) -> None:
    """Activations of a few hundred square past fp16's 65504 in GroupNorm's variance: flagged, not hidden."""
    torch.manual_seed(0)
    model = PreActBlock()
    with torch.no_grad():
        model.stem.weight.mul_(400.0)  # GroupNorm inputs in the hundreds to thousands
    package = _convert(model, tmp_path / "m.mlpackage", compute_precision=ct.precision.FLOAT16)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    execution = Emulator(package, fp16=True).run({"x": x})
    assert execution.overflows, "the overflow went unreported"
    assert any(o.startswith(("square", "reduce_mean", "mul")) for o in execution.overflows), execution.overflows
    assert not Emulator(package, fp16=False).run({"x": x}).overflows  # the same program in fp32 is fine


def test_explicit_quantize_dequantize_match_torch(tmp_path: Path) -> None:
    class QDQ(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.dequantize(torch.quantize_per_tensor(x, 0.02, 0, torch.qint8))
            w = self.conv.weight
            scale = w.detach().abs().flatten(1).amax(1) / 127
            zeros = torch.zeros(8, dtype=torch.long)
            w = torch.dequantize(torch.quantize_per_channel(w, scale, zeros, 0, torch.qint8))
            return F.relu(F.conv2d(x, w, self.conv.bias))

    torch.manual_seed(0)
    model = QDQ()
    package = _convert(model, tmp_path / "m.mlpackage", shape=(1, 3, 8, 8))
    ops = package.op_histogram()
    assert ops["quantize"] == 1 and ops["dequantize"] == 1 and ops["constexpr_affine_dequantize"] == 1
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (output,) = Emulator(package, fp16=False).run({"x": x}).outputs.values()
    assert np.abs(output - _torch(model, x)).max() <= 1e-5


@pytest.mark.parametrize(("deployment", "op"), [("iOS16", "constexpr_affine_dequantize"),
                                                ("iOS18", "constexpr_blockwise_shift_scale")])  # fmt: skip
def test_int8_weight_constants_decode_to_the_quantized_weights(tmp_path: Path, deployment: str, op: str) -> None:
    import coremltools.optimize.coreml as cto

    torch.manual_seed(0)
    model = PreActBlock()
    float_package = _convert(model, tmp_path / "f.mlpackage", minimum_deployment_target=getattr(ct.target, deployment))
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))  # fmt: skip
    mlmodel = cto.linear_quantize_weights(ct.models.MLModel(str(float_package.root)), config)
    mlmodel.save(str(tmp_path / "q.mlpackage"))
    package = MLPackage(tmp_path / "q.mlpackage")
    assert package.op_histogram()[op] >= 4
    emulator = Emulator(package, fp16=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    emulator.run({"x": x})
    weights = {name: value for name, value in emulator.constants.items() if name.endswith("quantized")}
    stem = next(v for name, v in weights.items() if "stem" in name)
    reference = model.stem.weight.detach().numpy()
    step = np.abs(reference).reshape(len(reference), -1).max(axis=1) / 127
    assert np.all(np.abs(stem - reference) <= step.reshape(-1, 1, 1, 1) / 2 + 1e-7)  # on the int8 grid
    (quantized,) = emulator.run({"x": x}).outputs.values()
    assert _relative_error(quantized, _torch(model, x)) <= 0.05


def test_unknown_op_is_an_error_naming_it(tmp_path: Path) -> None:
    class Sine(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x) + 1

    package = _convert(Sine(), tmp_path / "m.mlpackage")
    with pytest.raises(UnsupportedOpError, match="sin"):
        Emulator(package)
    with pytest.raises(PackageError, match="allowlist: sin"):
        check_package(package, labels=[])


def test_corrupt_weight_blob_is_reported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    package = _convert(PreActBlock(), tmp_path / "m.mlpackage")
    (name, value), *_ = package.blob_values() or [(None, None)]
    assert name is not None
    weights = package.weights_dir / "weight.bin"
    package.close()
    data = bytearray(weights.read_bytes())
    struct.pack_into("<I", data, value.blobFileValue.offset, 0x12345678)  # break the sentinel
    weights.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="sentinel"):
        MLPackage(tmp_path / "m.mlpackage").decode(value)
    weights.write_bytes(bytes(data[: value.blobFileValue.offset + 70]))  # truncated inside the blob
    with pytest.raises(PackageError, match=r"truncated|past the end|sentinel"):
        MLPackage(tmp_path / "m.mlpackage").decode(value)


def test_a_directory_that_is_not_a_package_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"Manifest\.json"):
        MLPackage(tmp_path)
