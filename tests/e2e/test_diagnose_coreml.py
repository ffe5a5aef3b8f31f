"""``bitedge diagnose`` on Core ML packages: every layer tapped in the emulator's run of the saved program, and a
fault planted in one layer of a real package found at exactly that layer.

Faults are edits of the saved MIL program (a weight blob, a constant), made where the test finds the layer by
structure alone (the i-th conv op of the program is the deploy graph's i-th convolution, the i-th GroupNorm's
``+ eps`` its i-th GroupNorm), independently of the map the conversion recorded, which diagnose reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from conftest import demo_eval_subset  # noqa: E402

from bitedge.artifacts.integrity import Allowances  # noqa: E402
from bitedge.cli import main  # noqa: E402
from bitedge.converters._coreml_package import BLOB_METADATA, MLPackage  # noqa: E402
from bitedge.converters._coreml_taps import TAPS_KEY  # noqa: E402
from bitedge.converters.coreml import PACKAGE  # noqa: E402
from bitedge.diagnose.run import Diagnosis, diagnose  # noqa: E402
from bitedge.diagnose.taps import tap_order  # noqa: E402
from bitedge.errors import BadInputError  # noqa: E402
from bitedge.fold import fold  # noqa: E402
from bitedge.model.loading import load_model  # noqa: E402

pytestmark = pytest.mark.slow  # converts the demo model, then runs the emulator on every diagnosis

ALLOW = Allowances(failed=True, modified=True)  # a planted fault changes the package's files
IMAGES = 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's Core ML packages in every precision, verified on 20 held-out digits."""
    root = tmp_path_factory.mktemp("diagnose-coreml")
    eval_images = demo_eval_subset(root / "eval", per_class=2)
    args = ["convert", "--target", "coreml", "--precision", "fp32", "fp16", "w8", "int8", "--eval", str(eval_images)]
    assert main([*args, "--out", str(root / "demo")]) == 0
    assert main([*args[:3], "--precision", "int8", "--raw-pixel-input", "--eval", str(eval_images),
                 "--out", str(root / "raw-int8")]) == 0  # fmt: skip
    return root


@pytest.fixture(scope="module")
def order() -> dict[str, str]:
    """The demo deploy graph's tap points -> kind, in forward order (the structural oracle of the faults)."""
    return tap_order(fold(load_model("bitedge/demo")), (64, 64))


def _run(directory: Path) -> Diagnosis:
    return diagnose(directory, images=IMAGES, allow=ALLOW)


@pytest.mark.parametrize("name", ["fp32", "fp16", "w8", "int8"])
def test_an_unmodified_package_is_tapped_everywhere_and_never_falls_off(demo: Path, name: str) -> None:
    diagnosis = _run(demo / "demo" / f"coreml-{name}")
    assert diagnosis.untapped == []
    assert not [layer.problem for layer in diagnosis.layers if layer.problem]
    assert diagnosis.fall_offs["conversion"].layer is None
    if name == "fp32":  # the emulator runs fp32 programs in float32: only summation order differs
        assert min(layer.pairs["artifact vs float"].snr_db for layer in diagnosis.layers) > 90


def test_a_raw_pixel_package_is_tapped_everywhere(demo: Path) -> None:
    diagnosis = _run(demo / "raw-int8")  # the stem conv is a (pad, conv) pair reading 0..255 pixels
    assert diagnosis.untapped == [] and diagnosis.fall_offs["conversion"].layer is None


def _copy(demo: Path, name: str, tmp_path: Path) -> tuple[Path, MLPackage]:
    directory = tmp_path / f"coreml-{name}"
    shutil.copytree(demo / "demo" / f"coreml-{name}", directory)
    return directory, MLPackage(directory / PACKAGE)


def _producer(package: MLPackage, var: str) -> Any:
    return next(op for op in package.block.operations if any(out.name == var for out in op.outputs))


def _input(op: Any, key: str) -> str:
    return str(op.inputs[key].arguments[0].name)


def _nth(order: dict[str, str], kind: str, layer: str) -> int:
    return [name for name, k in order.items() if k == kind].index(layer)


def _conv_op(package: MLPackage, order: dict[str, str], layer: str) -> Any:
    """The program's conv op of ``layer``: convolutions keep their forward order in the program."""
    convs = [op for op in package.block.operations if op.type == "conv"]
    return convs[_nth(order, "conv", layer)]


def _scale(package: MLPackage, value: Any, factor: float) -> None:
    """Multiply a MIL constant (a weight blob or an immediate tensor) by ``factor``, in the package's files."""
    array = package.decode(value)
    scaled = (array.astype(np.float64) * factor).astype(array.dtype)
    if value.WhichOneof("value") == "blobFileValue":
        path = package.weights_dir / value.blobFileValue.fileName.removeprefix("@model_path/weights/")
        with path.open("r+b") as handle:
            handle.seek(value.blobFileValue.offset)
            _, _, size, data_offset = BLOB_METADATA.unpack(handle.read(BLOB_METADATA.size))
            assert size == scaled.nbytes
            handle.seek(data_offset)
            handle.write(scaled.astype(scaled.dtype.newbyteorder("<")).tobytes())
        return
    tensor = value.immediateValue.tensor
    if tensor.WhichOneof("value") == "bytes":
        tensor.bytes.values = scaled.astype(scaled.dtype.newbyteorder("<")).tobytes()
    else:
        del tensor.floats.values[:]
        tensor.floats.values.extend(scaled.reshape(-1).tolist())
    _save(package)


def _constant(package: MLPackage, var: str) -> Any:
    """The ``Value`` a const op (or a constexpr op's ``scale``) holds for ``var``."""
    op = _producer(package, var)
    return op.attributes["val" if op.type == "const" else "scale"]


def _save(package: MLPackage) -> None:
    package.model_path.write_bytes(package.spec.SerializeToString())


def _falls_off_at(directory: Path, layer: str) -> None:
    diagnosis = _run(directory)
    fall_off = diagnosis.fall_offs["conversion"]
    assert fall_off.layer == layer, (fall_off, [(s.name, s.pairs) for s in diagnosis.layers][:3])
    assert fall_off.previous is not None  # every layer before it still matched


@pytest.mark.parametrize(
    ("name", "layer"),
    [("fp32", "bit.encoder.stages.1.layers.0.conv2"), ("fp16", "bit.encoder.stages.2.layers.0.conv1"),
     ("int8", "bit.encoder.stages.1.layers.0.conv3")],
)  # fmt: skip
def test_a_scaled_conv_weight_is_found_at_its_layer(
    demo: Path, order: dict[str, str], tmp_path: Path, name: str, layer: str
) -> None:
    directory, package = _copy(demo, name, tmp_path)
    conv = _conv_op(package, order, layer)
    _scale(package, _constant(package, _input(conv, "weight")), 1.5)  # int8: its per-channel weight scales
    _falls_off_at(directory, layer)


@pytest.mark.parametrize(
    ("name", "layer"),
    [("fp32", "bit.encoder.stages.2.layers.0.norm2"), ("fp16", "bit.encoder.stages.1.layers.0.norm3")],
)
def test_a_changed_group_norm_epsilon_is_found_at_its_layer(
    demo: Path, order: dict[str, str], tmp_path: Path, name: str, layer: str
) -> None:
    directory, package = _copy(demo, name, tmp_path)
    producers = {out.name: op.type for op in package.block.operations for out in op.outputs}
    plus_eps = [op for op in package.block.operations
                if op.type == "add" and producers.get(_input(op, "x")) == "reduce_mean"]  # fmt: skip
    eps = _constant(package, _input(plus_eps[_nth(order, "norm", layer)], "y"))
    assert np.isclose(package.decode(eps), 1e-5)
    _scale(package, eps, 1e8)  # 1e-5 -> 1000: past the variance of most groups
    _falls_off_at(directory, layer)


def test_a_changed_activation_scale_is_found_at_the_layer_that_quantizes(
    demo: Path, order: dict[str, str], tmp_path: Path
) -> None:
    layer = "bit.encoder.stages.2.layers.0.conv2"  # its input quantize reads norm2 alone (no shared Q/DQ)
    directory, package = _copy(demo, "int8", tmp_path)
    dequantize = _producer(package, _input(_conv_op(package, order, layer), "x"))
    quantize = _producer(package, _input(dequantize, "input"))
    assert (dequantize.type, quantize.type) == ("dequantize", "quantize")
    _scale(package, _constant(package, _input(quantize, "scale")), 3.0)  # dequantize keeps the calibrated one
    _falls_off_at(directory, layer)


def test_a_package_without_the_map_must_be_converted_again(demo: Path, tmp_path: Path) -> None:
    directory, package = _copy(demo, "fp32", tmp_path)
    recorded = json.loads(package.spec.description.metadata.userDefined[TAPS_KEY])
    assert recorded and all(isinstance(var, str) for var in recorded.values())
    del package.spec.description.metadata.userDefined[TAPS_KEY]  # what an older bitedge wrote
    _save(package)
    with pytest.raises(BadInputError, match="convert it again"):
        _run(directory)
