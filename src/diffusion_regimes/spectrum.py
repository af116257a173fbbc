"""PCA spectrum of a data set: the eigenvalues of its covariance matrix.

The speciation time is ``t_S = 1/2 log Lambda`` with Lambda the largest
eigenvalue. We diagonalise whichever of the d x d covariance or the n x n Gram
matrix is smaller (they share their non-zero eigenvalues), in float64.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def covariance_eigenvalues(x: torch.Tensor, top: int | None = None) -> np.ndarray:
    """Eigenvalues (decreasing, float64) of the covariance ``X_c^T X_c / n`` of x (n, d).

    Only ``min(n, d)`` eigenvalues can be non-zero; ``top`` keeps the largest ones.
    """
    n, d = x.shape
    xc = x.to(torch.float64)
    xc = xc - xc.mean(0, keepdim=True)
    gram = xc.T @ xc if d <= n else xc @ xc.T
    ev = torch.linalg.eigvalsh(gram / n).flip(0).clamp_min(0.0).numpy()
    return ev[:top] if top else ev


def spectrum_table(eigenvalues: np.ndarray) -> pd.DataFrame:
    """The ``spectrum.parquet`` table: ``rank`` (1-based) and ``eigenvalue``."""
    return pd.DataFrame({"rank": np.arange(1, len(eigenvalues) + 1, dtype=np.int64),
                         "eigenvalue": eigenvalues.astype(np.float64)})


def bulk_variance(eigenvalues: np.ndarray, d: int) -> float:
    """Mean variance per direction outside the top one: ``(trace - Lambda)/(d - 1)``."""
    return float((eigenvalues.sum() - eigenvalues[0]) / max(d - 1, 1))
