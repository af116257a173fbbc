"""U-turn experiments: forward to time t from a data point, back with the score model.

From a point a of the data (training or reference set), labelled c by the labeller that
cloning uses (closed-form classes, or the classifier): noise it forward to OU time t,
``x_t = a e^{-t} + sqrt(Delta_t) z`` (:func:`diffusion_regimes.schedule.forward_noise`),
run the backward process from there to the sampler's last time, and record whether the
final sample has label c. Both ends go through the same labeller, as both clones do in
cloning, with the one-sided label-flip correction (the start label is the point's own, only the
final sample's label is noisy). ``phi_U(t)`` is the probability
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
from .seeding import Stream, derive_seed, generator, numpy_generator


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


# ----------------------------------------------------------------------------- the measurement
#: summary columns (name, key of the metadata, dtype): one row per (experiment, score); absent
#: (null) for experiments without U-turns
SUMMARY = (("t_U_measured", "t_U_measured", "Float64"), ("t_U_measured_se", "t_U_measured_se", "Float64"))


def measure(score: Score, score_name: str, points: torch.Tensor, label: Callable, accuracy: float | None,
            sampler: dict, t_S: float, uturn: dict, seed: int, exp: str) -> tuple[object, dict, dict]:
    """U-turns from ``uturn.n_points`` of the given points: phi_U(t) with bootstrap errors and
    the time where it crosses phi(t_S) of the closed form (and, for classes from a classifier,
    phi_U corrected for its held-out error). Returns (table, results, config record)."""
    from .cloning import add_agreement_columns, agreement_table, branch_times_ou, flip_replicates
    from .theory import PHI_AT_T_S

    pick = choose_points(len(points), uturn["n_points"], derive_seed(seed, exp, Stream.UTURN))
    samp = Sampler.from_config(sampler)
    branch = branch_times_ou(uturn["branch_times"], t_S, uturn["time_unit"])
    times, kept = u_turn(score, samp, points[pick], branch, label, derive_seed(seed, exp, Stream.UTURN, score_name),
                         uturn["batch"], progress=True)
    boot = derive_seed(seed, exp, Stream.BOOTSTRAP_UTURN, score_name)
    table, cross = agreement_table(times, kept, uturn["n_bootstrap"], boot)
    table = table.rename(columns={"n_pairs": "n_points"})
    corrected = {}
    if accuracy is not None:  # labels from a classifier: also corrected for its held-out error
        eps = 1.0 - accuracy
        c = add_agreement_columns(table, "corrected", times, kept, uturn["n_bootstrap"], boot, flip=eps,
                                  flip_boot=flip_replicates(eps, getattr(label, "n_test", None),
                                                            uturn["n_bootstrap"], boot), one_sided=True)
        corrected = {"t_U_measured_corrected": c["crossing"], "t_U_measured_corrected_se": c["crossing_se"]}
    results = {"t_U_measured": cross["crossing"], "t_U_measured_se": cross["crossing_se"],
               "t_U_measured_missed": cross["crossing_missed"], **corrected, "level": PHI_AT_T_S,
               "t_S": t_S, "accuracy": accuracy, "start": uturn["start"], "n_points": len(pick), "nfe": samp.nfe}
    return table, results, {"uturn": uturn, "sampler": samp.settings, "score": score_name}
