"""``darcy_lite``: predict the pressure field of Darcy flow from the permeability (NB360 Darcy).

Each example solves the 2-D steady Darcy equation ``-div(a grad u) = 1`` on the unit square with
``u = 0`` on the boundary.  The permeability ``a`` is piecewise constant, as in the FNO /
NAS-Bench-360 "piececonst" data: a Gaussian random field with spectrum
``(4 pi^2 |k|^2 + 9)^-2`` (zero mean mode) is sampled by FFT and thresholded, giving ``12``
where the field is non-negative and ``3`` elsewhere.  The equation is discretised on the
``s x s`` grid of nodes (boundary nodes included) with the 5-point finite-volume stencil, whose
face conductivities are harmonic means of the two neighbouring nodes' ``a``, and solved with
``scipy.sparse.linalg.spsolve``.  Input ``a`` and target ``u`` are both ``1 x s x s``.

Why it is non-trivial: the map from ``a`` to ``u`` is a dense, global operator (every
permeability value affects the whole pressure field), so encoder-decoder, multi-scale or spectral
architectures beat per-pixel or flat MLP ones.  The score is minus the relative L2 error
``||u_hat - u|| / ||u||`` averaged over samples (NB360's metric).  Every example is an independent
field draw, so no permeability field is shared between splits.

The pressure is tiny (about 1e-2), so targets are multiplied by one constant, chosen from the
train split so that its root-mean-square value is 1 and recorded as ``target_scale`` in the
metadata; a global scale leaves the relative L2 error unchanged.  The trainer normalises the
inputs with train statistics itself.

Recipe overrides: batch 16 (1,000 training fields) and AdamW at 2e-3, the digest's Darcy setting.
With the default SGD recipe a global MLP only reaches the mean-field error (relative L2 0.19
after 8 epochs, the same as predicting the train mean); with AdamW it reaches 0.11.
"""

from __future__ import annotations

import numpy as np

from .data import REGRESSION, Split, TaskData
from .provenance import file_sha256
from .registry import TaskError, TaskSpec, register_task, split_sizes

NAME = "darcy_lite"
INSTALL = "pip install scipy"
RESOLUTION = 32
HIGH, LOW = 12.0, 3.0  # permeability where the random field is >= 0 / < 0
TAU, ALPHA = 3.0, 2.0  # spectrum (4 pi^2 |k|^2 + tau^2)^-alpha
SIZES = {"default": (1_000, 100, 100), "small": (120, 40, 40)}


def _scipy():
    """scipy.sparse and its solver; TaskError naming the install command when absent."""
    try:
        from scipy import sparse
        from scipy.sparse import linalg
    except ImportError:
        raise TaskError(f"task {NAME!r} needs scipy.sparse; install it with `{INSTALL}`") from None
    return sparse, linalg


def permeability(rng: np.random.RandomState, s: int = RESOLUTION) -> np.ndarray:
    """One piecewise-constant permeability field (s, s): a thresholded Gaussian random field."""
    k = np.fft.fftfreq(s, d=1.0 / s)  # integer wave numbers
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    amplitude = (4 * np.pi ** 2 * k2 + TAU ** 2) ** (-ALPHA / 2)  # sqrt of the spectrum
    amplitude[0, 0] = 0.0  # zero-mean field, so the threshold at 0 splits it roughly evenly
    noise = rng.standard_normal((s, s))
    field = np.fft.ifft2(np.fft.fft2(noise) * amplitude).real
    return np.where(field >= 0, HIGH, LOW)


def solve_pressure(a: np.ndarray) -> np.ndarray:
    """The pressure ``u`` (s, s) with ``-div(a grad u) = 1`` inside and ``u = 0`` on the boundary.

    Node (i, j) sits at (i h, j h), h = 1/(s-1).  For each interior node the flux through each
    of its four faces is ``k_face (u_p - u_q) / h^2`` with ``k_face`` the harmonic mean of the two
    nodes' permeabilities; boundary neighbours have ``u_q = 0``.
    """
    sparse, linalg = _scipy()
    s = a.shape[0]
    m = s - 2  # interior nodes per side
    h2 = 1.0 / (s - 1) ** 2
    inner = a[1:-1, 1:-1]
    index = np.arange(m * m).reshape(m, m)
    diagonal = np.zeros((m, m))
    rows, cols, vals = [], [], []
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        neighbour = a[1 + di:s - 1 + di, 1 + dj:s - 1 + dj]
        face = 2.0 * inner * neighbour / (inner + neighbour) / h2
        diagonal += face
        ni = np.arange(m)[:, None] + di + np.zeros((1, m), dtype=int)
        nj = np.arange(m)[None, :] + dj + np.zeros((m, 1), dtype=int)
        inside = (ni >= 0) & (ni < m) & (nj >= 0) & (nj < m)
        rows.append(index[inside])
        cols.append(index[ni[inside], nj[inside]])
        vals.append(-face[inside])
    rows.append(index.ravel())
    cols.append(index.ravel())
    vals.append(diagonal.ravel())
    matrix = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(m * m, m * m))
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = linalg.spsolve(matrix, np.ones(m * m)).reshape(m, m)
    return u


def make_darcy(seed: int, size: str = "default") -> TaskData:
    """The ``darcy_lite`` splits for ``seed`` (deterministic; a private RandomState)."""
    sizes = split_sizes(SIZES, size)
    _scipy()
    rng = np.random.RandomState(seed)
    counts = dict(zip(("train", "valid", "test"), sizes, strict=True))
    fields: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, n in counts.items():
        a = np.stack([permeability(rng) for _ in range(n)])
        u = np.stack([solve_pressure(field) for field in a])
        fields[name] = (a, u)
    scale = float(1.0 / np.sqrt(np.mean(fields["train"][1] ** 2)))
    splits = {name: Split(a[:, None].astype(np.float32), (u[:, None] * scale).astype(np.float32))
              for name, (a, u) in fields.items()}
    shape = (1, RESOLUTION, RESOLUTION)
    metadata = {
        "codename": NAME, "task_type": REGRESSION, "target_shape": list(shape),
        "target_scale": scale, "permeability_values": [LOW, HIGH],
        "spectrum": f"(4 pi^2 |k|^2 + {TAU:g}^2)^-{ALPHA:g}",
        # the generator has no data files: the procedure in this module is the source
        "source_sha256": file_sha256(__file__), "scipy_version": _scipy_version(),
    }
    return TaskData(NAME, shape, REGRESSION, splits, target_shape=shape, metadata=metadata)


def _scipy_version() -> str:
    import scipy

    return scipy.__version__


register_task(TaskSpec(
    name=NAME,
    description=("Darcy flow: map a piecewise-constant 1x32x32 permeability field to the 1x32x32 "
                 "pressure solving -div(a grad u) = 1 with zero boundary values; scored by "
                 "relative L2 error."),
    mirrors="NAS-Bench-360 Darcy Flow (FNO piececonst data)",
    input_shape=(1, RESOLUTION, RESOLUTION),
    task_type=REGRESSION,
    metric="neg_relative_l2",
    source="scipy",
    install=INSTALL,
    version="1",
    generator=make_darcy,
    target_shape=(1, RESOLUTION, RESOLUTION),
    recipe={"batch_size": 16, "optimizer": "adamw", "lr": 2e-3},
))
