"""U-turn experiments: forward to time t from a data point, back with the score model.

From a point a of the data (training or reference set), labelled c by the labeller that
cloning uses (closed-form classes, or the classifier): noise it forward to OU time t,
``x_t = a e^{-t} + sqrt(Delta_t) z`` (:func:`diffusion_regimes.schedule.forward_noise`),
run the backward process from there to the sampler's last time, and record whether the
final sample has label c. Both ends go through the same labeller, as both clones do in
cloning, so the same label-flip correction applies. ``phi_U(t)`` is the probability
that it has: 1 for t << t_S (the noise cannot move the sample out of its class), the
chance level for t >> t_S: evidence of speciation independent of cloning. For the
two-Gaussian mixture the backward process from x_t samples P(a | x_t), so
``phi_U(t) = E[P(c | x_t)]`` with x_t drawn around a point of class c, which is the
closed form of cloning's phi(t) (:func:`diffusion_regimes.theory.gm_phi`), crossing
``PHI_AT_T_S`` at t_S.

All branch times run in one pass down the sampler's grid: the rows of a branch time
join the batch at its grid index, so each row costs only the steps from its start to
the end. Block c of points draws from ``generator(seed, Stream.TRAJECTORIES, c)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from .sampling import Sampler
from .schedule import forward_noise
from .scores import Score
from .seeding import Stream, generator, numpy_generator


def choose_points(n: int, n_points: int, seed: int) -> np.ndarray:
    """Indices (min(n, n_points),) of the points the U-turns start from: a random subset
    drawn with ``seed`` (the same for every score model of an experiment), sorted."""
    if n_points >= n:
        return np.arange(n)
    return np.sort(numpy_generator(seed).choice(n, size=n_points, replace=False))


def u_turn(score: Score, sampler: Sampler, points: torch.Tensor, branch_times: np.ndarray,
           label: Callable[[torch.Tensor], torch.Tensor], seed: int, batch: int = 256,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """U-turns from ``points`` (n, d) at every branch time (OU).

    Returns (grid times (K,) increasing, kept (K, n) bool: the final sample's label equals
    the point's, both from ``label``). Points run ``batch`` at a time, so memory is bounded
    by ``K * batch * d`` floats."""
    idx = sampler.snap(branch_times)
    K, n, d = len(idx), points.shape[0], points.shape[1]
    starts: dict[int, list[int]] = {}
    for k in np.argsort(idx, kind="stable"):
        starts.setdefault(int(idx[k]), []).append(int(k))
    kept = np.zeros((K, n), dtype=bool)
    for c, start in enumerate(range(0, n, batch)):
        rows = slice(start, min(start + batch, n))
        a = points[rows]
        B = a.shape[0]
        gen = generator(seed, Stream.TRAJECTORIES, c)
        noise = torch.randn(K, B, d, generator=gen)
        x = torch.empty(0, d)
        joined: list[int] = []  # branch index of each block of B rows of x, in join order
        for i in tqdm(range(int(idx.min()), sampler.steps + 1), desc=f"u-turns {start}-{start + B} of {n}",
                      disable=not progress, mininterval=5):
            for k in starts.get(i, []):
                x = torch.cat([x, forward_noise(a, float(sampler.grid[i]), noise[k])])
                joined.append(k)
            if i < sampler.steps:
                x = sampler.step(score, x, i, gen)
        final = torch.as_tensor(label(x)).view(len(joined), B)
        kept[np.asarray(joined), rows] = (final == torch.as_tensor(label(a))[None]).numpy()
    times = sampler.grid[idx]
    order = np.argsort(times, kind="stable")
    return times[order], kept[order]
