"""Runs exported einspace models where einspace cannot be imported and reports their outputs'
distance to the reference outputs saved with them.

This file is run as a script in a fresh interpreter (``python -I standalone_check.py JOBS
THREADS``, see :mod:`einspace.export.verify`), never imported.  Its first statement makes every
``import einspace`` fail, so an export that secretly needs einspace fails here.  JOBS is a JSON
list of ``{"dir": ..., "sample": "sample.pt", "files": {format: file}}``; one JSON line is
printed per format with ``max_abs_error`` and ``scale`` (the reference's largest magnitude) or
``error``.
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


RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx, "pytorch": run_pytorch}


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


def main(jobs: list, threads: int) -> None:
    torch.set_num_threads(threads)
    alone = isolated()
    for job in jobs:
        folder = Path(job["dir"])
        sample = torch.load(folder / job["sample"], map_location="cpu", weights_only=True)
        for fmt, file in job["files"].items():
            result = {"dir": job["dir"], "format": fmt, "isolated": alone}
            try:
                result.update(compare(RUNNERS[fmt](folder / file, sample["input"]),
                                      sample["output"]))
            except Exception as e:  # reported, not raised: one broken export spoils no other
                text = str(e).strip()
                result["error"] = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), int(sys.argv[2]))
