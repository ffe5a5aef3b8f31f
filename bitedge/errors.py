"""The bitedge error family.

Every failure a user can cause or fix raises a subclass of :class:`BitEdgeError` whose message says what was
wrong and what to do about it. Each class carries its exit code (``exit_code``: 2 bad input, 1 otherwise);
the CLI prints the message on one line, without a traceback.
"""

from __future__ import annotations


class BitEdgeError(Exception):
    """Base class of every error bitedge raises on purpose."""

    exit_code: int = 1


class BadInputError(BitEdgeError, ValueError):
    """A checkpoint, config, image or path given by the user is unusable."""

    exit_code = 2


class ConfigError(BadInputError):
    """A BiT configuration is invalid (unknown layer type, mismatched depths and sizes, ...)."""


class CheckpointError(BadInputError):
    """A checkpoint cannot be read or does not fit the architecture it claims."""


class ImageError(BadInputError):
    """An image cannot be decoded or converted."""


class UnknownTargetError(BadInputError):
    """A conversion target name is not registered."""


class MissingRuntimeError(BitEdgeError):
    """An optional runtime (onnxruntime, OpenVINO, coremltools, TensorRT) is not installed or not usable."""

    exit_code = 1


class CalibrationError(BitEdgeError):
    """Calibration could not produce a usable quantization table."""

    exit_code = 1


class ExportError(BitEdgeError):
    """A converter could not build the artifact (an operation its format lacks, a rule it breaks)."""

    exit_code = 1


class TargetError(ExportError):
    """A target's own code (its converter or runner) failed: reported as that target's failure, naming it."""


class ArtifactRefusedError(BitEdgeError):
    """An artifact failed its parity gate or changed since it was verified: using it needs an explicit flag."""

    exit_code = 1
