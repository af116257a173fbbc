"""Cloning experiments: the probability that two copies of one backward
trajectory, separated at time t and continued with independent noise, end with
the same label (class -> speciation phi(t); training point -> collapse phi_C(t)).

:func:`clone_shared_trunk` runs the trunk once, copies its state at every branch
time and continues one clone per branch: per pair it costs ``K + sum_j (K - i_j)``
score evaluations on a grid of K steps, against ``sum_j (K + (K - i_j))`` for
:func:`clone_rerun_per_branch`, the reference scheme that reruns the trunk from T
for every branch time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .sampling import Sampler
from .scores import Score
from .seeding import generator, shard_blocks
from .theory import PHI_CROSSING, crossing_time

Labeller = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CloneResult:
    """Outcome of a cloning run.

    ``times``: (K,) branch times snapped to the grid, increasing; ``agree``:
    (K, P) bool, pair p's clone made at ``times[k]`` ended with the trunk's label;
    ``nfe``: score evaluations; ``snapshots``: for pair 0, the trunk state at each
    branch time (K, d), the trunk's final state (d,), and the final state of the
    clone made at each branch time (K, d); ``trunk_labels`` (P,) and
    ``clone_labels`` (K, P): the labels themselves, for agreement at coarser levels.
    """

    times: np.ndarray
    agree: np.ndarray
    nfe: int
    snapshots: dict = field(default_factory=dict)
    trunk_labels: np.ndarray | None = None
    clone_labels: np.ndarray | None = None


def clone_shared_trunk(score: Score, sampler: Sampler, branch_times: np.ndarray, n_pairs: int,
                       d: int, label: Labeller, seed: int, pair_batch: int = 1024,
                       progress: bool = False, blocks: list[int] | None = None) -> CloneResult:
    """Shared-trunk cloning: one trunk per pair, one extra clone per branch time.

    All live rows (trunk + clones started so far) go through the score in one
    call per grid step. Pairs are processed ``pair_batch`` at a time so memory
    is ``O(pair_batch * (K + 1) * d)``. Block c of pairs (pairs ``c * pair_batch``
    onwards) draws from ``generator(seed, "pairs", c)``; ``blocks`` restricts the
    run to some blocks (a shard, :func:`diffusion_regimes.seeding.shard_blocks`),
    and the results are those pairs' in block order. Snapshots come from block 0.
    ``progress`` shows a bar over grid steps.
    """
    idx = sampler.snap(branch_times)
    order = np.argsort(idx, kind="stable")  # clones start in grid order (largest t first)
    inv = torch.as_tensor(np.argsort(order))  # row block of each branch time
    starts = np.bincount(idx, minlength=sampler.steps + 1)
    nfe0 = sampler.nfe
    trunk_chunks, clone_chunks, snapshots = [], [], {}
    blocks = shard_blocks(n_pairs, pair_batch) if blocks is None else blocks
    for c in blocks:
        p0 = c * pair_batch
        P = min(pair_batch, n_pairs - p0)
        gen = generator(seed, "pairs", c)
        x = sampler.prior(P, d, gen)
        trunk_at = []
        for i in tqdm(range(sampler.steps + 1), desc=f"cloning pairs {p0}-{p0 + P}", disable=not progress,
                      mininterval=5):
            for _ in range(starts[i]):
                trunk_at.append(x[0].clone())
                x = torch.cat([x, x[:P]])
            if i < sampler.steps:
                x = sampler.step(score, x, i, gen)
        labels = label(x)
        clone_labels = labels[P:].view(len(idx), P)[inv]  # back to the caller's order
        trunk_chunks.append(labels[:P].numpy())
        clone_chunks.append(clone_labels.numpy())
        if p0 == 0:
            snapshots = {
                "trunk": torch.stack(trunk_at)[inv].numpy(),
                "trunk_final": x[0].numpy().copy(),
                "clone_final": x[P:].view(len(idx), P, d)[inv, 0].numpy(),
            }
    times = sampler.grid[idx]
    sort = np.argsort(times)
    snapshots = {k: (v[sort] if v.ndim == 2 else v) for k, v in snapshots.items()}
    K = len(idx)
    trunk_labels = np.concatenate(trunk_chunks) if trunk_chunks else np.empty(0, np.int64)
    clone_labels = (np.concatenate(clone_chunks, 1) if clone_chunks else np.empty((K, 0), np.int64))[sort]
    return CloneResult(times[sort], clone_labels == trunk_labels[None], sampler.nfe - nfe0, snapshots,
                       trunk_labels, clone_labels)


def clone_rerun_per_branch(score: Score, sampler: Sampler, branch_times: np.ndarray,
                           n_pairs: int, d: int, label: Labeller, seed: int) -> CloneResult:
    """Reference scheme: for every branch time, a fresh trajectory from T and two
    continuations from the branch time. Same statistics, more evaluations."""
    idx = sampler.snap(branch_times)
    nfe0 = sampler.nfe
    agree = []
    for j, i in enumerate(idx):
        gen = generator(seed, "branch", j)
        x = sampler.run(score, sampler.prior(n_pairs, d, gen), gen, stop=int(i))
        x = sampler.run(score, torch.cat([x, x]), gen, start=int(i))
        labels = label(x)
        agree.append((labels[:n_pairs] == labels[n_pairs:]).numpy())
    times = sampler.grid[idx]
    sort = np.argsort(times)
    return CloneResult(times[sort], np.stack(agree)[sort], sampler.nfe - nfe0)


def agreement_table(times: np.ndarray, agree: np.ndarray, n_boot: int, seed: int,
                    level: float | None = PHI_CROSSING) -> tuple[pd.DataFrame, dict]:
    """phi(t) with bootstrap standard errors and 95 % percentile intervals.

    Pairs are resampled jointly across branch times, so the crossing of ``level``
    gets a bootstrap standard error too. Returns the table (``t, phi, phi_se,
    phi_lo, phi_hi, n_pairs``) and scalars (``crossing``, ``crossing_se``).
    """
    K, P = agree.shape
    a = agree.astype(np.float32)
    phi = a.mean(1)
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, K), dtype=np.float64)
    chunk = max(1, int(2e7 // max(K * P, 1)))
    for b0 in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - b0)
        sample = rng.integers(0, P, size=(nb, P))
        boots[b0:b0 + nb] = a[:, sample].mean(-1).T
    table = pd.DataFrame({
        "t": times.astype(np.float64), "phi": phi.astype(np.float64),
        "phi_se": boots.std(0, ddof=1) if n_boot > 1 else np.full(K, np.nan),
        "phi_lo": np.percentile(boots, 2.5, axis=0), "phi_hi": np.percentile(boots, 97.5, axis=0),
        "n_pairs": np.full(K, P, dtype=np.int64)})
    scalars = {}
    if level is not None:
        crossing = crossing_time(times, phi, level)
        boot_cross = np.array([crossing_time(times, bp, level) for bp in boots])
        ok = np.isfinite(boot_cross)
        scalars = {"crossing": crossing,
                   "crossing_se": float(boot_cross[ok].std(ddof=1)) if ok.sum() > 1 else float("nan")}
    return table, scalars
