"""PCA spectrum of a data set: the top eigenvalues of its covariance matrix.

The speciation time is ``t_S = 1/2 log Lambda`` with Lambda the largest
eigenvalue. The covariance ``C = X_c^T X_c / n`` (X_c: the centred data) shares
its non-zero eigenvalues with the Gram matrix ``X_c X_c^T / n``; we work on the
side of dimension ``m = min(n, d)``:

- ``dense`` (default when m <= :data:`DENSE_MAX`): the m x m matrix accumulated
  in float64 over blocks of the data, then ``eigvalsh``;
- ``iterative`` (default above): Lanczos (``scipy.sparse.linalg.eigsh``) on the
  implicit operator ``v -> X_c^T (X_c v) / n``, which never forms C or a centred
  copy of X: memory is the data plus ``O(m * top)``.

For images the spectrum can also be taken over channel 0 only (as the paper's
reference code does); which one sets t_S is said in the metadata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from .seeding import numpy_generator

#: largest min(n, d) diagonalised densely by the ``auto`` method
DENSE_MAX = 4096
METHODS = ("auto", "dense", "iterative")


def _centred_block(x: torch.Tensor, mean: torch.Tensor, rows: slice | None = None,
                   cols: slice | None = None) -> torch.Tensor:
    xb = x[rows or slice(None)][:, cols or slice(None)].to(torch.float64)
    return xb - mean[cols or slice(None)]


def column_mean(x: torch.Tensor, block: int = 512) -> torch.Tensor:
    """Mean (d,) float64 of x (n, d), accumulated over row blocks (no float64 copy of x)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, x.shape[0], block):
        total += x[i:i + block].sum(0, dtype=torch.float64)
    return total / x.shape[0]


def covariance_trace(x: torch.Tensor, block: int = 512) -> float:
    """Total variance ``trace(C)`` of x (n, d), accumulated in float64 over row blocks."""
    mean = column_mean(x, block)
    return float(sum((_centred_block(x, mean, slice(i, i + block)) ** 2).sum()
                     for i in range(0, x.shape[0], block)) / x.shape[0])


def covariance_eigenvalues(x: torch.Tensor, top: int | None = None, method: str = "auto",
                           block: int = 512) -> np.ndarray:
    """Largest eigenvalues (decreasing, float64) of the covariance of x (n, d), float32.

    ``top``: how many (all ``min(n, d)`` by default with ``dense``; required, or 64,
    with ``iterative``). ``block``: rows (or columns) of x cast to float64 at once.
    """
    if method not in METHODS:
        raise ValueError(f"unknown spectrum method {method!r}: use one of {METHODS}")
    n, d = x.shape
    m = min(n, d)
    mean = column_mean(x, block)
    if method == "dense" or (method == "auto" and m <= DENSE_MAX):
        if d <= n:  # covariance, accumulated over blocks of rows
            mat = torch.zeros(d, d, dtype=torch.float64)
            for i in range(0, n, block):
                xb = _centred_block(x, mean, rows=slice(i, i + block))
                mat.addmm_(xb.T, xb)
        else:  # Gram matrix, accumulated over blocks of columns
            mat = torch.zeros(n, n, dtype=torch.float64)
            for j in range(0, d, block):
                xb = _centred_block(x, mean, cols=slice(j, j + block))
                mat.addmm_(xb, xb.T)
        ev = torch.linalg.eigvalsh(mat / n).flip(0).clamp_min(0.0).numpy()
        return ev[:top] if top else ev
    k = min(top or 64, m - 1)
    mean32 = mean.to(torch.float32)

    def matvec(v: np.ndarray) -> np.ndarray:  # v -> X_c^T X_c v / n  (or X_c X_c^T v / n)
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float32)
        if d <= n:
            u = x @ v - mean32 @ v
            out = x.T @ u - mean32 * u.sum()
        else:
            u = x.T @ v - mean32 * v.sum()
            out = x @ u - mean32 @ u
        return (out.double() / n).numpy()

    op = LinearOperator((m, m), matvec=matvec, dtype=np.float64)
    v0 = numpy_generator(0).standard_normal(m)  # a deterministic start vector
    ev = eigsh(op, k=k, which="LA", return_eigenvectors=False, v0=v0, tol=1e-6)
    return np.sort(np.clip(ev, 0.0, None))[::-1]


def spectrum_table(eigenvalues: np.ndarray) -> pd.DataFrame:
    """The ``spectrum.parquet`` table: ``rank`` (1-based) and ``eigenvalue``."""
    return pd.DataFrame({"rank": np.arange(1, len(eigenvalues) + 1, dtype=np.int64),
                         "eigenvalue": eigenvalues.astype(np.float64)})


def bulk_variance(Lambda: float, trace: float, d: int) -> float:
    """Mean variance per direction outside the top one: ``(trace - Lambda)/(d - 1)``."""
    return float((trace - Lambda) / max(d - 1, 1))


# ----------------------------------------------------------------------------- the measurement
#: summary columns (name, key of the metadata, dtype; None: inferred): one row per experiment
SUMMARY = (("n", "n", "int64"), ("d", "d", "int64"), ("Lambda", "Lambda", None),
           ("Lambda_channel0", "Lambda_channel0", None), ("t_S_theory", "t_S", None), ("source", "source", None),
           ("Lambda_paper", "Lambda_paper", "Float64"), ("t_S_half_log_Lambda", "t_S_half_log_Lambda", "Float64"))


def measure(x: torch.Tensor, shape: tuple[int, ...], spectrum: dict) -> tuple[pd.DataFrame, dict]:
    """Top of the covariance spectrum over all channels (the table) and Lambda over channel 0
    only; ``spectrum.lambda_from`` says which Lambda sets t_S = 1/2 log Lambda."""
    from .schedule import speciation_time

    n, d = x.shape
    ev = covariance_eigenvalues(x, spectrum["top"], spectrum["method"])
    if len(shape) == 3 and shape[0] > 1:
        lambda0 = float(covariance_eigenvalues(x.view(n, shape[0], -1)[:, 0].contiguous(), 1, spectrum["method"])[0])
    else:
        lambda0 = float(ev[0])
    lambda_all = float(ev[0])
    Lambda = lambda_all if spectrum["lambda_from"] == "all" else lambda0
    trace = covariance_trace(x)
    results = {"Lambda": Lambda, "t_S": speciation_time(Lambda), "Lambda_all": lambda_all,
               "Lambda_channel0": lambda0, "t_S_channel0": speciation_time(lambda0),
               "lambda_from": spectrum["lambda_from"], "trace": trace,
               "bulk_variance": bulk_variance(lambda_all, trace, d), "n": n, "d": d}
    return spectrum_table(ev[:spectrum["top"]]), results
