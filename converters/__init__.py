"""Converters, one module per target (onnx, openvino, coreml, tensorrt), installed as ``bitedge.converters``.

Each target implements the converter contract of DESIGN.md and registers itself in one dict; heavy runtime
imports happen inside methods so that ``bitedge --help`` stays fast. The first target lands with the
fold/ONNX/parity issue.
"""
