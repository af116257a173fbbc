"""Collapse (memorisation) measured on generated trajectories.

Along each backward trajectory we track the index of the nearest scaled
training point ``argmin_mu |x(t) - a_mu e^{-t}|``; the trajectory's collapse
time is the last time that index changes (the OU time of the first recorded grid
point from which it stays constant: with ``every > 1`` changes between two
recordings are attributed to the later one), and ``d*`` is the distance from the
denoised final sample to that training point.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .sampling import Sampler
from .scores import EmpiricalScore, Score
from .seeding import Stream, generator, shard_blocks


def track_nearest(score: Score, sampler: Sampler, train: EmpiricalScore, n_traj: int, seed: int,
                  every: int = 1, batch: int = 1024, progress: bool = False,
                  blocks: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n_traj`` trajectories and record the nearest training index.

    Returns ``times`` (S,) decreasing OU times where the index was recorded (every
    ``every`` grid steps, always including both ends), ``nearest`` (S, m) int64,
    ``d_star`` (m,) float: the Euclidean distance between the denoised final sample
    (:meth:`Sampler.denoise`) and its final nearest training point, and the
    trajectories' indices (m,). Block b of ``batch`` trajectories draws from
    ``generator(seed, "trajectories", b)``; ``blocks`` restricts the run to some
    blocks (a shard), else m = n_traj.
    """
    record = set(range(0, sampler.steps + 1, max(1, every))) | {sampler.steps}
    times = sampler.grid[sorted(record)]
    blocks = shard_blocks(n_traj, batch) if blocks is None else blocks
    ids = np.concatenate([np.arange(c * batch, min((c + 1) * batch, n_traj)) for c in blocks] or
                         [np.empty(0, np.int64)]).astype(np.int64)
    nearest = np.empty((len(times), len(ids)), dtype=np.int64)
    d_star = np.empty(len(ids), dtype=np.float64)
    done = 0
    for c in blocks:
        B = min(batch, n_traj - c * batch)
        b0 = done
        done += B
        gen = generator(seed, Stream.TRAJECTORIES, c)
        rows: list[np.ndarray] = []

        def observe(i: int, x: torch.Tensor, rows=rows) -> None:
            if i in record:
                idx, _ = train.nearest(x, float(sampler.grid[i]))
                rows.append(idx.numpy())

        x = sampler.run(score, sampler.prior(B, train.d, gen), gen, callback=observe,
                        desc=f"trajectories {c * batch}-{c * batch + B}" if progress else None)
        nearest[:, b0:b0 + B] = np.stack(rows)
        x0 = sampler.denoise(score, x)
        d_star[b0:b0 + B] = (x0 - train.a[torch.as_tensor(rows[-1])]).norm(dim=1).numpy()
    return times, nearest, d_star, ids


def collapse_times(times: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Per-trajectory collapse time (n_traj,): the OU time from which the nearest
    index no longer changes. ``times`` (S,) decreasing, ``nearest`` (S, n_traj)."""
    changed = nearest[1:] != nearest[:-1]  # (S-1, n)
    S = nearest.shape[0]
    # last change at position s means constant from s + 1 on
    last = np.where(changed.any(0), S - 1 - np.argmax(changed[::-1], axis=0), 0)
    return times[last]


def collapse_table(times: np.ndarray, nearest: np.ndarray, d_star: np.ndarray,
                   ids: np.ndarray | None = None) -> pd.DataFrame:
    """The ``collapse_times.parquet`` table: trajectory, t_collapse, nearest_index, d_star."""
    return pd.DataFrame({
        "trajectory": np.arange(nearest.shape[1], dtype=np.int64) if ids is None else ids.astype(np.int64),
        "t_collapse": collapse_times(times, nearest).astype(np.float64),
        "nearest_index": nearest[-1].astype(np.int64),
        "d_star": d_star.astype(np.float64)})


def collapse_statistics(table: pd.DataFrame) -> dict:
    """Scalars of a collapse-times table: the mean collapse time with its standard error, the
    median, the mean d* and the number of distinct final training points."""
    tc = table["t_collapse"].to_numpy()
    return {"t_C_measured": float(tc.mean()) if len(tc) else float("nan"),
            "t_C_measured_se": float(tc.std(ddof=1) / math.sqrt(len(tc))) if len(tc) > 1 else float("nan"),
            "t_C_median": float(np.median(tc)) if len(tc) else float("nan"),
            "d_star_mean": float(table["d_star"].mean()),
            "distinct_final_points": int(table["nearest_index"].nunique())}
