"""Collapse (memorisation) measured on generated trajectories, with its null.

Along each backward trajectory we track the index of the nearest scaled
training point ``argmin_mu |x(t) - a_mu e^{-t}|``; the trajectory's collapse
time is the last time that index changes (the OU time of the first recorded grid
point from which it stays constant: with ``every > 1`` changes between two
recordings are attributed to the later one), and ``d*`` is the distance from the
denoised final sample to that training point.

A sampler that never memorises still gets a collapse time from that rule, so the
same tracking runs against a **reference set** the model never saw (fresh draws of
the population, or the held-out split of the images): ``t_collapse_null``. And
memorisation is measured directly on the denoised final sample: with ``d1 <= d2``
its distances to the nearest and second-nearest training points (l2 over sqrt(d)),
it is **memorised** when ``d1 / d2 < 1/3`` (Yoon et al. 2023; Bonnaire et al. 2025),
against the reference set likewise for the null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .bootstrap import mean_se, replicate_means, standard_error
from .sampling import Sampler
from .scores import EmpiricalScore, Score
from .seeding import Stream, derive_seed, generator, shard_blocks

#: a final sample is memorised when d1 / d2 is below this ratio
MEMORISED_RATIO = 1.0 / 3.0


@dataclass
class Tracking:
    """Trajectories tracked by :func:`track_nearest`: ``times`` (S,) decreasing OU times of
    the recordings; ``nearest`` (S, m) int64 nearest training indices; ``nearest_null``
    (S, m) nearest reference indices (None without a reference); ``x0`` (m, d) denoised
    final samples; ``ids`` (m,) trajectory indices."""

    times: np.ndarray
    nearest: np.ndarray
    nearest_null: np.ndarray | None
    x0: torch.Tensor
    ids: np.ndarray


def track_nearest(score: Score, sampler: Sampler, train: EmpiricalScore, n_traj: int, seed: int,
                  every: int = 1, batch: int = 1024, progress: bool = False,
                  blocks: list[int] | None = None, reference: EmpiricalScore | None = None) -> Tracking:
    """Generate ``n_traj`` trajectories and record the nearest training index (and the
    nearest reference index) every ``every`` grid steps, both ends included.

    Block b of ``batch`` trajectories draws from ``generator(seed, Stream.TRAJECTORIES, b)``;
    ``blocks`` restricts the run to some blocks (a shard), else m = n_traj. The final
    states are denoised (:meth:`Sampler.denoise`).
    """
    record = set(range(0, sampler.steps + 1, max(1, every))) | {sampler.steps}
    times = sampler.grid[sorted(record)]
    blocks = shard_blocks(n_traj, batch) if blocks is None else blocks
    ids = np.concatenate([np.arange(c * batch, min((c + 1) * batch, n_traj)) for c in blocks] or
                         [np.empty(0, np.int64)]).astype(np.int64)
    nearest = np.empty((len(times), len(ids)), dtype=np.int64)
    nearest_null = np.empty((len(times), len(ids)), dtype=np.int64) if reference is not None else None
    x0 = torch.empty(len(ids), train.d)
    done = 0
    for c in blocks:
        B = min(batch, n_traj - c * batch)
        b0 = done
        done += B
        gen = generator(seed, Stream.TRAJECTORIES, c)
        rows: list[np.ndarray] = []
        rows_null: list[np.ndarray] = []

        def observe(i: int, x: torch.Tensor, rows=rows, rows_null=rows_null) -> None:
            if i in record:
                t = float(sampler.grid[i])
                rows.append(train.nearest(x, t)[0].numpy())
                if reference is not None:
                    rows_null.append(reference.nearest(x, t)[0].numpy())

        x = sampler.run(score, sampler.prior(B, train.d, gen), gen, callback=observe,
                        desc=f"trajectories {c * batch}-{c * batch + B}" if progress else None)
        nearest[:, b0:b0 + B] = np.stack(rows)
        if reference is not None:
            nearest_null[:, b0:b0 + B] = np.stack(rows_null)
        x0[b0:b0 + B] = sampler.denoise(score, x).to(x0.dtype)
    return Tracking(times, nearest, nearest_null, x0, ids)


def collapse_times(times: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Per-trajectory collapse time (n_traj,): the OU time from which the nearest
    index no longer changes. ``times`` (S,) decreasing, ``nearest`` (S, n_traj)."""
    changed = nearest[1:] != nearest[:-1]  # (S-1, n)
    S = nearest.shape[0]
    # last change at position s means constant from s + 1 on
    last = np.where(changed.any(0), S - 1 - np.argmax(changed[::-1], axis=0), 0)
    return times[last]


def _memorisation(x0: torch.Tensor, points: EmpiricalScore, prefix: str) -> dict[str, np.ndarray]:
    """d1, d2 (l2 over sqrt(d)) of the final samples to their two nearest points, and the flag."""
    _, d1, d2 = points.two_nearest(x0)
    scale = math.sqrt(points.d)
    d1, d2 = (d1 / scale).numpy().astype(np.float64), (d2 / scale).numpy().astype(np.float64)
    return {f"d1{prefix}": d1, f"d2{prefix}": d2, f"memorised{prefix}": d1 < MEMORISED_RATIO * d2}


def collapse_table(track: Tracking, train: EmpiricalScore, reference: EmpiricalScore | None = None) -> pd.DataFrame:
    """The ``collapse_times.parquet`` table, one row per trajectory: ``trajectory``,
    ``t_collapse``, ``nearest_index``, ``d_star`` (Euclidean distance from the denoised final
    sample to that training point), ``d1``, ``d2``, ``memorised``, and against the
    reference set ``t_collapse_null``, ``nearest_index_null``, ``d1_null``, ``d2_null``,
    ``memorised_null`` (NaN / False without a reference)."""
    final = torch.as_tensor(track.nearest[-1])
    m = len(track.ids)
    columns = {
        "trajectory": track.ids.astype(np.int64),
        "t_collapse": collapse_times(track.times, track.nearest).astype(np.float64),
        "nearest_index": track.nearest[-1].astype(np.int64),
        "d_star": (track.x0 - train.a[final]).norm(dim=1).numpy().astype(np.float64) if m else np.empty(0),
        **(_memorisation(track.x0, train, "") if m else {"d1": np.empty(0), "d2": np.empty(0),
                                                         "memorised": np.empty(0, bool)})}
    if reference is not None and track.nearest_null is not None and m:
        columns.update({"t_collapse_null": collapse_times(track.times, track.nearest_null).astype(np.float64),
                        "nearest_index_null": track.nearest_null[-1].astype(np.int64),
                        **_memorisation(track.x0, reference, "_null")})
    else:
        columns.update({"t_collapse_null": np.full(m, np.nan), "nearest_index_null": np.full(m, -1, np.int64),
                        "d1_null": np.full(m, np.nan), "d2_null": np.full(m, np.nan),
                        "memorised_null": np.zeros(m, bool)})
    return pd.DataFrame(columns)


def collapse_statistics(table: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> dict:
    """Scalars of a collapse-times table: the mean collapse time (all trajectories, the
    memorised ones, and against the reference set) with standard errors, the median, the
    memorised fraction with its bootstrap standard error (and the reference's), the mean
    d* and the number of distinct final training points."""
    tc = table["t_collapse"].to_numpy()
    mem = table["memorised"].to_numpy(dtype=bool)
    t_c, t_c_se = mean_se(tc)
    t_mem, t_mem_se = mean_se(tc[mem])
    t_null, t_null_se = mean_se(table["t_collapse_null"].to_numpy(dtype=np.float64))
    boots = replicate_means(mem, n_boot, seed) if len(mem) and n_boot > 1 else np.full(2, np.nan)
    return {"t_C_measured": t_c, "t_C_measured_se": t_c_se,
            "t_C_median": float(np.median(tc)) if len(tc) else float("nan"),
            "memorised_fraction": float(mem.mean()) if len(mem) else float("nan"),
            "memorised_fraction_se": float(standard_error(boots)),
            "memorised_fraction_null": float(table["memorised_null"].to_numpy(dtype=bool).mean())
            if len(mem) else float("nan"),
            "memorised_count": int(mem.sum()),
            "t_C_memorised": t_mem, "t_C_memorised_se": t_mem_se,
            "t_C_null": t_null, "t_C_null_se": t_null_se,
            "d_star_mean": float(table["d_star"].mean()),
            "distinct_final_points": int(table["nearest_index"].nunique()),
            "criterion": f"d1/d2 < {MEMORISED_RATIO:.4g} (l2 over sqrt(d), denoised final samples)"}


# ----------------------------------------------------------------------------- the measurement
#: summary columns (name, key of the gathered metadata, dtype): one row per (experiment, score)
SUMMARY = (("t_C_measured", "t_C_measured", "Float64"), ("memorised_fraction", "memorised_fraction", "Float64"),
           ("memorised_fraction_se", "memorised_fraction_se", "Float64"),
           ("memorised_fraction_null", "memorised_fraction_null", "Float64"),
           ("t_C_memorised", "t_C_memorised", "Float64"), ("t_C_null", "t_C_null", "Float64"))


def shard(score: Score, score_name: str, x: torch.Tensor, x_ref: torch.Tensor, sampler: dict, t_S: float,
          collapse: dict, block: int, seed: int, exp: str, shard: int = 0) -> tuple[pd.DataFrame, object, dict, dict]:
    """Trajectories and clone pairs of shard ``shard`` of ``collapse.shards``: nearest training
    (and reference) points along the trajectories, memorisation of the final samples, and the
    clone pairs' final nearest training points. Returns (collapse table, labels table of the
    pairs, results, config record)."""
    from . import cloning

    base = getattr(score, "unchecked", score)
    train_set = base if isinstance(base, EmpiricalScore) else EmpiricalScore(x, block)
    reference = EmpiricalScore(x_ref, block) if len(x_ref) >= 2 else None
    samp = Sampler.from_config(sampler)
    shards, batch = collapse.get("shards", 1), collapse["pair_batch"]
    nfe0 = samp.nfe
    track = track_nearest(
        score, samp, train_set, collapse["n_trajectories"], derive_seed(seed, exp, Stream.COLLAPSE, score_name),
        collapse["track_every"], batch, progress=True,
        blocks=shard_blocks(collapse["n_trajectories"], batch, shard, shards), reference=reference)
    t_end = float(samp.grid[-1])

    def nearest_label(xf):
        return train_set.nearest(xf, t_end)[0]

    branch = cloning.branch_times_ou(collapse["branch_times"], t_S, collapse.get("time_unit", "t_S"))
    res = cloning.clone_shared_trunk(score, samp, branch, collapse["n_pairs"], x.shape[1], nearest_label,
                                     derive_seed(seed, exp, Stream.COLLAPSE_CLONING, score_name), batch,
                                     progress=True, blocks=shard_blocks(collapse["n_pairs"], batch, shard, shards))
    cfg = {"collapse": collapse, "sampler": samp.settings, "score": score_name, "shard": shard}
    results = {"nfe_trajectories": samp.nfe - nfe0 - res.nfe, "nfe": res.nfe, "times": res.times.tolist(),
               "sampler_settings": samp.settings}
    return collapse_table(track, train_set, reference), cloning.labels_table(res), results, cfg


def gather(table: pd.DataFrame, times: np.ndarray, trunk: np.ndarray, clone: np.ndarray, metas: list[dict],
           collapse: dict, seed: int, exp: str, score_name: str) -> tuple[pd.DataFrame, dict, dict]:
    """The shards gathered: the statistics of the collapse times (:func:`collapse_statistics`)
    and phi_C(t), the probability that two clones end on the same training point. Returns
    (phi_C table, results, config record)."""
    from . import cloning

    phi, _ = cloning.agreement_table(times, clone == trunk[None], collapse["n_bootstrap"],
                                     derive_seed(seed, exp, Stream.BOOTSTRAP_COLLAPSE, score_name), level=None)
    phi_c = phi.rename(columns={"phi": "phi_c", "phi_se": "phi_c_se", "phi_lo": "phi_c_lo", "phi_hi": "phi_c_hi"})
    results = {**collapse_statistics(table, collapse["n_bootstrap"],
                                     derive_seed(seed, exp, Stream.BOOTSTRAP_MEMORISED, score_name)),
               "nfe": int(sum(m["nfe"] for m in metas)), "shards": len(metas)}
    cfg = {"collapse": {**metas[0]["config"]["collapse"], **collapse}, "sampler": metas[0]["sampler_settings"],
           "score": score_name}
    return phi_c, results, cfg
