"""Runs exported einspace models where einspace cannot be imported and reports their outputs'
distance to the reference outputs saved with them.

This file is run as a script in a fresh interpreter (``python -I standalone_check.py JOBS
THREADS``, see :mod:`einspace.export.verify`), never imported.  Its first statement makes every
``import einspace`` fail, so an export that secretly needs einspace fails here.  JOBS is a JSON
list of ``{"dir": ..., "sample": "sample.pt", "files": {format: file}}``; the sample file holds
batches of several sizes (``batches``, each ``input`` and ``output``) and the formats exported for
one fixed batch size (``fixed_batch``), which are run on that size only.  One JSON line is printed
per format with ``max_abs_error`` and ``scale`` (the reference's largest magnitude) over all its
batches, and the ``batches`` sizes run, or ``error``.
"""

import sys

sys.modules["einspace"] = None  # noqa: E402  (from here on, `import einspace` raises)

import importlib.util  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402


def run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    model = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return model(x)


def run_pt2(path: Path, x: torch.Tensor) -> torch.Tensor:
    model = torch.export.load(str(path)).module()
    with torch.no_grad():
        return model(x)


def run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return torch.from_numpy(session.run(None, feed)[0])


def run_pytorch(path: Path, x: torch.Tensor) -> torch.Tensor:
    spec = importlib.util.spec_from_file_location("exported_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.load()  # reads state_dict.pt beside model.py
    with torch.no_grad():
        return model(x)


RUNNERS = {"pt2": run_pt2, "torchscript": run_torchscript, "onnx": run_onnx, "pytorch": run_pytorch}


def isolated() -> bool:
    try:
        import einspace  # noqa: F401
    except ImportError:
        return True
    return False


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict:
    if tuple(out.shape) != tuple(ref.shape):
        return {"error": f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}"}
    out, ref = out.double(), ref.double()
    nan = torch.isnan(ref)
    if not torch.equal(torch.isnan(out), nan):
        return {"error": "NaN where the reference has none (or the other way round)"}
    diff = (out - ref).abs().masked_fill(nan, 0.0)
    return {"max_abs_error": float(diff.max()) if diff.numel() else 0.0,
            "scale": float(ref.abs().masked_fill(nan, 0.0).max()) if ref.numel() else 0.0}


def run_batches(fmt: str, path: Path, batches: list, fixed: int | None) -> dict:
    """The largest error and scale over the batches a format is run on."""
    result = {"max_abs_error": 0.0, "scale": 0.0, "batches": []}
    for batch in batches:
        size = batch["input"].shape[0]
        if fixed is not None and size != fixed:
            continue
        compared = compare(RUNNERS[fmt](path, batch["input"]), batch["output"])
        if "error" in compared:
            return {"error": f"batch size {size}: {compared['error']}"}
        result["max_abs_error"] = max(result["max_abs_error"], compared["max_abs_error"])
        result["scale"] = max(result["scale"], compared["scale"])
        result["batches"].append(size)
    return result


def main(jobs: list, threads: int) -> None:
    torch.set_num_threads(threads)
    alone = isolated()
    for job in jobs:
        folder = Path(job["dir"])
        sample = torch.load(folder / job["sample"], map_location="cpu", weights_only=True)
        for fmt, file in job["files"].items():
            result = {"dir": job["dir"], "format": fmt, "isolated": alone}
            try:
                result.update(run_batches(fmt, folder / file, sample["batches"],
                                          sample["fixed_batch"].get(fmt)))
            except Exception as e:  # reported, not raised: one broken export spoils no other
                text = str(e).strip()
                result["error"] = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), int(sys.argv[2]))
