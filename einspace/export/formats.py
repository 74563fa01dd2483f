"""The export formats by name, apart from their writers (which import torch and onnx), so that
``einspace export --help`` can list them at once."""

FORMATS = ("pt2", "onnx", "pytorch", "torchscript")
DEFAULT_FORMAT = "pt2"
