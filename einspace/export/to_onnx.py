"""ONNX export with ``torch.onnx.export(dynamo=True)``, the exporter torch recommends (it needs
the ``onnxscript`` package), with a dynamic batch dimension; where it fails or onnxscript is
missing, with the TorchScript-based one (``dynamo=False``), and the card says why.  Every file is
checked with ``onnx.checker``.  The TorchScript-based export keeps a dynamic batch too unless a
node needs it fixed (then it is the sample's, and the card names the node).

One gap of the TorchScript-based exporter is closed here: adaptive average pooling to a size that
does not divide the input (HyperZ·Z·W's context pooling, dense heads) has no ONNX operator, but
with the input sizes fixed it is a linear map, so it is written as products with constant pooling
matrices.  That exporter's shape inference loses those sizes behind some operations once the
batch is dynamic (a ``group_dim`` split before HyperZ·Z·W's pooling), so they are also recorded
from a forward pass on the sample and read from there when the graph does not know them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.onnx import symbolic_helper
from torch.overrides import TorchFunctionMode

from .culprit import find_culprit
from .errors import ExportError, first_line
from .locate import Place
from .silence import silenced

FILE = "model.onnx"
OPSET = 17
POOLS = ("aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d")
INSTALL = "pip install 'einspace[export]'"
NO_ONNXSCRIPT = ("torch.onnx.export(dynamo=True), the exporter torch recommends, needs the "
                 f"onnxscript package ({INSTALL})")


def pooling_matrix(size: int, out: int) -> torch.Tensor:
    """(out, size): row i averages the window torch's adaptive pooling gives output i."""
    matrix = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


_SEEN_SIZES: dict[tuple[int, ...], set[tuple[int, ...]]] = {}  # pooled size -> input sizes


class _RecordPoolSizes(TorchFunctionMode):
    """Records the input sizes of every adaptive average pooling a forward pass makes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in ("adaptive_avg_pool1d", "adaptive_avg_pool2d"):
            x, out = args[0], args[1] if len(args) > 1 else kwargs["output_size"]
            dims = 1 if func.__name__.endswith("1d") else 2
            out = (out,) * dims if isinstance(out, int) else tuple(out)
            sizes = tuple(x.shape[-dims:])
            out = tuple(s if o is None else o for s, o in zip(sizes, out, strict=True))
            _SEEN_SIZES.setdefault(out, set()).add(sizes)
        return func(*args, **kwargs)


def _pooled_sizes(x, out: list[int]) -> list[int]:
    """The input sizes of a pooling: the graph's, else the one the sample pass recorded."""
    sizes = x.type().varyingSizes()[-len(out):]  # the batch dim may be dynamic, these not
    if None not in sizes:
        return sizes
    seen = _SEEN_SIZES.get(tuple(out), set())
    if len(seen) != 1:
        raise ValueError(f"adaptive average pooling to {tuple(out)} of a map whose size the "
                         f"ONNX exporter cannot infer")
    return list(next(iter(seen)))


@symbolic_helper.parse_args("v", "is")
def _adaptive_avg_pool(g, x, out: list[int]):
    """Symbolic of adaptive average pooling over the last ``len(out)`` dims."""
    sizes = _pooled_sizes(x, out)
    if all(s % o == 0 for s, o in zip(sizes, out, strict=True)):
        kernel = [s // o for s, o in zip(sizes, out, strict=True)]
        return g.op("AveragePool", x, kernel_shape_i=kernel, strides_i=kernel)
    columns = pooling_matrix(sizes[-1], out[-1]).T.contiguous()
    y = g.op("MatMul", x, g.op("Constant", value_t=columns))
    if len(out) == 2:
        y = g.op("MatMul", g.op("Constant", value_t=pooling_matrix(sizes[0], out[0])), y)
    return y


@contextlib.contextmanager
def _pooling_symbolics(module: nn.Module, args: tuple):
    """Use :func:`_adaptive_avg_pool` for the duration of one export only, with the pooling
    sizes of ``module`` on ``args`` recorded."""
    _SEEN_SIZES.clear()
    with torch.no_grad(), _RecordPoolSizes():
        module(*args)
    for name in POOLS:
        torch.onnx.register_custom_op_symbolic(name, _adaptive_avg_pool, OPSET)
    try:
        yield
    finally:
        for name in POOLS:
            torch.onnx.unregister_custom_op_symbolic(name, OPSET)
        _SEEN_SIZES.clear()


class _Unpacked(nn.Module):
    """An aggregation module (list input) with its tensors as separate inputs."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *xs: Tensor):
        return self.module(list(xs))


@contextlib.contextmanager
def _quiet():
    """No warnings, and no graph dumps: the exporter switches its C++ log (which writes to the
    process's stdout) on for every export and never back off, so a failing export prints the
    whole graph.  The log state is restored and stdout silenced at the file-descriptor level."""
    logging = torch._C._jit_is_onnx_log_enabled()
    try:
        with silenced(1):
            yield
    finally:
        torch._C._jit_set_onnx_log_enabled(logging)


def _export(module: nn.Module, args: tuple, target, dynamic: bool) -> None:
    if len(args) == 1 and isinstance(args[0], list):
        module, args = _Unpacked(module), tuple(args[0])
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    with _pooling_symbolics(module, args), _quiet():
        torch.onnx.export(module, args, target, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes)


def export_onnx(network: nn.Module, sample: Tensor, out_dir: Path,
                places: dict[str, Place]) -> dict:
    """Write ``model.onnx`` with a dynamic batch dimension, or with the sample's batch size where
    a node needs it fixed (a convolution grouped per sample); returns the card's entry."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check runs the model with it)
    except ImportError as e:
        raise ExportError(f"needs the {e.name} package ({INSTALL})", fmt="onnx") from None
    path = out_dir / FILE
    info = {"files": [FILE], "exporter": "torch.onnx.export (dynamo=True)", "input": "input",
            "output": "output", "batch": "dynamic"}
    why_not = _export_dynamo(network, sample, path)
    if why_not is None:
        info["opset"] = next(o.version for o in onnx.load(str(path)).opset_import
                             if o.domain in ("", "ai.onnx"))
    else:
        info |= {"exporter": "torch.onnx.export (dynamo=False)", "exporter_reason": why_not,
                 "opset": OPSET}
        _export_torchscript_based(network, sample, path, places, info)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker rejects the exported model ({first_line(e)})",
                          fmt="onnx") from None
    info["checker"] = "onnx.checker.check_model(full_check=True) passed"
    return info


def _export_dynamo(network: nn.Module, sample: Tensor, path: Path) -> str | None:
    """Write ``path`` with the dynamo exporter; None when that worked, else why not."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter writes its graph with it)
    except ImportError:
        return NO_ONNXSCRIPT
    try:
        with _quiet(), silenced(2):
            program = torch.onnx.export(network, (sample,), dynamo=True, verbose=False,
                                        input_names=["input"], output_names=["output"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            program.save(str(path))
    except Exception as e:
        path.unlink(missing_ok=True)
        return f"torch.onnx.export(dynamo=True) fails ({first_line(e)})"
    return None


def _export_torchscript_based(network: nn.Module, sample: Tensor, path: Path,
                              places: dict[str, Place], info: dict) -> None:
    """Write ``path`` with ``dynamo=False``, with a fixed batch size only where needed."""
    try:
        _export(network, (sample,), str(path), dynamic=True)
    except Exception as dynamic_error:
        try:
            _export(network, (sample,), str(path), dynamic=False)
        except Exception as e:
            path.unlink(missing_ok=True)
            place, reason = _blame(network, places, sample, e, dynamic=False)
            raise ExportError(f"torch.onnx.export fails ({reason})", place, "onnx") from None
        place, reason = _blame(network, places, sample, dynamic_error, dynamic=True)
        where = f" at {place}" if place else ""
        info["batch"] = sample.shape[0]
        info["note"] = (f"batch size fixed to {sample.shape[0]}: a dynamic batch fails{where} "
                        f"({reason})")


def _blame(network: nn.Module, places: dict[str, Place], sample: Tensor, error: Exception,
           dynamic: bool) -> tuple[Place | None, str]:
    """(node, reason) of an export failure: the deepest node that fails alone, else the
    network as a whole."""
    found = find_culprit(network, places, sample,
                         lambda m, args: _export(m, args, io.BytesIO(), dynamic=dynamic))
    return found if found else (None, first_line(error))
