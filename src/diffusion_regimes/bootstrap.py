"""The bootstrap of every measurement: resampled rows, replicate statistics, percentile
intervals and the count of replicates that fail (cloning and U-turn crossings, collapse
fractions, tau_mem along the memorisation study's snapshots).

Rows (pairs, trajectories, points) are resampled with replacement, ``n_boot`` replicates
drawn from :func:`diffusion_regimes.seeding.numpy_generator` of one seed; where several
columns share their rows (the branch times of one pair, the snapshots of one trajectory)
every column is resampled with the same rows, so a statistic across columns (a crossing,
a first passage) gets its error from the joint resampling.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .seeding import numpy_generator

#: elements (replicates x rows x columns) resampled at once: bounds the memory of a bootstrap
CHUNK_ELEMENTS = 2e7


def resampled_rows(n: int, n_boot: int, seed: int, columns: int = 1) -> Iterator[np.ndarray]:
    """Row indices (b, n) of the replicates, a chunk at a time (at most about
    :data:`CHUNK_ELEMENTS` elements of ``columns`` columns); the chunks are consecutive draws
    of one stream, so their concatenation is the same whatever the chunk size."""
    rng = numpy_generator(seed)
    chunk = max(1, int(CHUNK_ELEMENTS // max(columns * n, 1)))
    for b0 in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - b0), n))


def replicate_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means over resampled rows: ``values`` (K, n) (K columns sharing their n rows) gives
    (n_boot, K), ``values`` (n,) gives (n_boot,); computed in ``values``' dtype."""
    v = np.asarray(values)
    flat = v[None] if v.ndim == 1 else v
    K, n = flat.shape
    out = np.empty((n_boot, K), dtype=np.float64)
    b0 = 0
    for idx in resampled_rows(n, n_boot, seed, K):
        out[b0:b0 + len(idx)] = flat[:, idx].mean(-1).T
        b0 += len(idx)
    return out[:, 0] if v.ndim == 1 else out


def standard_error(replicates: np.ndarray) -> np.ndarray | float:
    """The bootstrap standard error (std over replicates, axis 0); NaN with fewer than two."""
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.shape[0] < 2:
        return np.full(reps.shape[1:], np.nan) if reps.ndim > 1 else float("nan")
    se = reps.std(0, ddof=1)
    return float(se) if np.ndim(se) == 0 else se


def finite_spread(replicates: np.ndarray) -> tuple[float, int]:
    """(standard error over the finite replicates, the number of the others: replicates whose
    statistic failed, e.g. a phi that never crosses its level)."""
    reps = np.asarray(replicates, dtype=np.float64)
    ok = np.isfinite(reps)
    return (float(reps[ok].std(ddof=1)) if ok.sum() > 1 else float("nan")), int((~ok).sum())


def percentile_interval(replicates: np.ndarray, tail: float = 2.5,
                        open_ended: bool = False) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The percentile interval of the replicates (axis 0) between the ``tail`` and
    ``100 - tail`` percentiles (95 % by default). With ``open_ended``, a failed replicate
    (NaN: e.g. a threshold never passed) counts as beyond every value, and the outer order
    statistics are taken, so the upper end is ``inf`` when more than ``tail`` % of them
    failed; (NaN, NaN) without replicates."""
    lo_q, hi_q = tail, 100 - tail
    reps = np.asarray(replicates, dtype=np.float64)
    if not open_ended:
        return np.percentile(reps, lo_q, axis=0), np.percentile(reps, hi_q, axis=0)
    if not len(reps):
        return float("nan"), float("nan")
    filled = np.where(np.isnan(reps), np.inf, reps)
    return (float(np.percentile(filled, lo_q, method="lower")), float(np.percentile(filled, hi_q, method="higher")))


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean of the finite values (NaN where too few)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else float("nan")
    return mean, float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
