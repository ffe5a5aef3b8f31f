"""Reading a saved ``.mlpackage`` directly, without Core ML (which only runs on macOS).

A package is a directory: ``Manifest.json`` names its items; the root item is the model specification (a
protobuf, ``Data/com.apple.CoreML/model.mlmodel``) whose ``mlProgram`` holds the MIL program, and large
constants live in ``weights/weight.bin``. That file is MIL blob storage:

- a 64-byte header: ``uint32 count, uint32 version (= 2)``, then reserved bytes;
- per blob, 64-byte aligned: 64 bytes of metadata ``uint32 sentinel (0xDEADBEEF), uint32 dtype,
  uint64 size_in_bytes, uint64 data_offset`` (+ reserved), at the offset the program's ``BlobFileValue``
  points to; the raw little-endian data sits at ``data_offset``.

Only the protobuf message classes come from coremltools (they are generated code, no runtime); decoding of
values and blobs, and every consistency check, is done here.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.errors import BadInputError

BLOB_SENTINEL = 0xDEADBEEF
BLOB_HEADER = struct.Struct("<II")  # count, version
BLOB_METADATA = struct.Struct("<IIQQ")  # sentinel, dtype, size in bytes, data offset
# MIL blob dtype codes (MILBlob BlobDataType) -> numpy; sub-byte and fp8 codes are not produced for BiT
BLOB_DTYPES = {1: np.float16, 2: np.float32, 3: np.uint8, 4: np.int8, 6: np.int16, 7: np.uint16, 14: np.int32,
               15: np.uint32}  # fmt: skip
# MIL DataType names -> numpy
MIL_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}  # fmt: skip


class PackageError(BadInputError):
    """A .mlpackage is missing a part, or a part does not decode."""


@dataclass(frozen=True)
class TensorType:
    dtype: str  # MIL DataType name, e.g. "FLOAT16"
    shape: tuple[int, ...] | None  # None when a dimension is not a constant


class MLPackage:
    """One saved .mlpackage: its specification, its main program and its weights."""

    def __init__(self, root: str | Path) -> None:
        from coremltools.proto import Model_pb2

        self.root = Path(root)
        manifest_path = self.root / "Manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            entries = manifest["itemInfoEntries"]
            model_item = entries[manifest["rootModelIdentifier"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PackageError(f"{manifest_path}: not a readable .mlpackage manifest ({exc})") from None
        self.data_dir = self.root / "Data"
        self.model_path = self.data_dir / model_item["path"]
        self.spec = Model_pb2.Model()
        try:
            self.spec.ParseFromString(self.model_path.read_bytes())
        except Exception as exc:  # protobuf raises DecodeError, file access OSError
            raise PackageError(f"{self.model_path}: the model specification does not parse ({exc})") from None
        if not self.spec.HasField("mlProgram"):
            raise PackageError(f"{self.model_path}: not an ML program (the emulator runs mlprogram models only)")
        self.weights_dir = self.model_path.parent / "weights"
        self._blob_files: dict[Path, Any] = {}

    # -- the program ------------------------------------------------------------------------------------
    @cached_property
    def function(self) -> Any:
        functions = self.spec.mlProgram.functions
        if "main" not in functions:
            raise PackageError(f"{self.model_path}: the program has no 'main' function")
        return functions["main"]

    @property
    def opset(self) -> str:
        return str(self.function.opset)

    @property
    def block(self) -> Any:
        return self.function.block_specializations[self.opset]

    def op_histogram(self) -> Counter[str]:
        return Counter(op.type for op in self.block.operations)

    def files(self) -> list[str]:
        """Every file of the package, relative to its parent directory (for the artifact manifest)."""
        return sorted(str(p.relative_to(self.root.parent)) for p in self.root.rglob("*") if p.is_file())

    # -- values -----------------------------------------------------------------------------------------
    def decode(self, value: Any) -> Any:
        """A MIL ``Value``: a numpy array (tensors, scalars as 0-d arrays), or a list (list values)."""
        which = value.WhichOneof("value")
        if which == "blobFileValue":
            return self.read_blob(value.blobFileValue.fileName, value.blobFileValue.offset, tensor_type(value.type))
        if which != "immediateValue":
            raise PackageError(f"unsupported MIL value kind {which!r}")
        immediate = value.immediateValue
        kind = immediate.WhichOneof("value")
        if kind == "list":
            return [self.decode(v) for v in immediate.list.values]
        if kind != "tensor":
            raise PackageError(f"unsupported immediate MIL value {kind!r}")
        return _decode_tensor(immediate.tensor, tensor_type(value.type))

    def read_blob(self, file_name: str, offset: int, expected: TensorType) -> np.ndarray:
        """One blob of weight storage, checked against the type the program declares for it."""
        path = self.weights_dir / file_name.removeprefix("@model_path/weights/")
        handle = self._blob_file(path)
        handle.seek(offset)
        raw = handle.read(BLOB_METADATA.size)
        if len(raw) < BLOB_METADATA.size:
            raise PackageError(f"{path}: blob metadata at offset {offset} is past the end of the file")
        sentinel, code, size, data_offset = BLOB_METADATA.unpack(raw)
        if sentinel != BLOB_SENTINEL:
            raise PackageError(f"{path}: no blob at offset {offset} (sentinel {sentinel:#x}, not 0xDEADBEEF)")
        if code not in BLOB_DTYPES:
            raise PackageError(f"{path}: blob at {offset} has dtype code {code}, which the emulator cannot decode")
        dtype = np.dtype(BLOB_DTYPES[code])
        if dtype != np.dtype(MIL_DTYPES.get(expected.dtype, object)):
            raise PackageError(f"{path}: blob at {offset} holds {dtype}, the program declares {expected.dtype}")
        shape = expected.shape or ()
        if size != int(np.prod(shape)) * dtype.itemsize:
            raise PackageError(f"{path}: blob at {offset} has {size} bytes, shape {shape} of {dtype} needs more/less")
        handle.seek(data_offset)
        data = handle.read(size)
        if len(data) != size:
            raise PackageError(f"{path}: blob at {offset} is truncated ({len(data)} of {size} bytes)")
        return np.frombuffer(bytearray(data), dtype=dtype.newbyteorder("<")).reshape(shape)  # writable, for torch

    def _blob_file(self, path: Path) -> Any:
        if path not in self._blob_files:
            try:
                handle = path.open("rb")
            except OSError as exc:
                raise PackageError(f"{path}: cannot open the weight file ({exc.strerror})") from None
            _count, version = BLOB_HEADER.unpack(handle.read(BLOB_HEADER.size))
            if version != 2:
                raise PackageError(f"{path}: blob storage version {version}, expected 2")
            self._blob_files[path] = handle
        return self._blob_files[path]

    def blob_values(self) -> list[tuple[str, Any]]:
        """(op output name, Value) of every value stored in weight files, in program order."""
        found = []
        for op in self.block.operations:
            for key, value in op.attributes.items():
                if value.WhichOneof("value") == "blobFileValue":
                    found.append((f"{op.outputs[0].name}.{key}", value))
        return found

    def close(self) -> None:
        for handle in self._blob_files.values():
            handle.close()
        self._blob_files.clear()


def tensor_type(value_type: Any) -> TensorType:
    """The dtype name and constant shape of a MIL ``ValueType`` holding a tensor."""
    from coremltools.proto import MIL_pb2

    if value_type.WhichOneof("type") != "tensorType":
        return TensorType("LIST", None)
    tensor = value_type.tensorType
    dims = []
    for dim in tensor.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            return TensorType(MIL_pb2.DataType.Name(tensor.dataType), None)
        dims.append(int(dim.constant.size))
    return TensorType(MIL_pb2.DataType.Name(tensor.dataType), tuple(dims))


def _decode_tensor(tensor: Any, typ: TensorType) -> Any:
    shape = typ.shape or ()
    kind = tensor.WhichOneof("value")
    if typ.dtype == "STRING":
        strings = list(tensor.strings.values)
        return strings[0] if not shape else strings
    if typ.dtype not in MIL_DTYPES:
        raise PackageError(f"unsupported MIL tensor dtype {typ.dtype}")
    dtype = np.dtype(MIL_DTYPES[typ.dtype])
    if kind == "bytes":
        return np.frombuffer(tensor.bytes.values, dtype=dtype.newbyteorder("<")).reshape(shape).astype(dtype)
    values = {"floats": tensor.floats, "ints": tensor.ints, "bools": tensor.bools, "longInts": tensor.longInts,
              "doubles": tensor.doubles}[kind].values  # fmt: skip
    return np.asarray(list(values), dtype=dtype).reshape(shape)
