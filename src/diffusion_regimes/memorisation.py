"""Memorisation against training time and dataset size.

The follow-up of the speciation/collapse paper (Bonnaire, Urfin, Biroli, Mézard 2025,
"Why diffusion models don't memorize: the role of implicit dynamical regularization in
training") measures a network along its training: its samples become good after a
generalisation time ``tau_gen`` that does not depend on the number n of training
points, and memorised only after ``tau_mem``, which grows like n. This module owns
those measurements; the stages wire them (one job per weight snapshot, a gather per
experiment, a gather per group of n).

Conventions (all stated in the files' metadata):

- **Snapshots** at log-spaced training steps, :func:`snapshot_steps`:
  ``round(10 ** (k / per_decade))`` from ``first`` on, and the last step. The grid
  depends on ``per_decade`` only, so a longer run keeps every snapshot of a shorter one
  (the old last step too when it lies on the grid).
- **Memorised** sample: ``d1 / d2 < 1/3`` (:data:`diffusion_regimes.collapse.MEMORISED_RATIO`).
- ``tau_mem`` (:func:`tau_mem`): the training step where the memorised fraction first
  exceeds ``threshold``, interpolated linearly in log(step) between the last snapshot at
  or below it and the first above it (the first snapshot when it is already above);
  NaN when no snapshot passes (right-censored), an upper bound when the first snapshot
  already passes (left-censored, left out of the fit), and an interval bound of ``inf``
  when more than 2.5 % of the bootstrap replicates never pass. Its 95 % interval is the
  percentile interval of a bootstrap over the generated trajectories (the same at every
  snapshot, so the same resampled rows at every snapshot).
- ``tau_gen`` (:func:`tau_gen`): the first snapshot whose quality is within two
  standard errors of the best one (the quality curve has a plateau, so its arg-min alone
  is noise); ``tau_gen_loss``: the snapshot of lowest held-out denoising loss.
- **Quality** (:func:`kernel_distance`): the squared maximum mean discrepancy (MMD²,
  unbiased) with a Gaussian kernel between generated and held-out samples, the kernel's
  width the median distance between held-out samples; on raw coordinates for vectors, on
  the project's classifier's penultimate features for images. Its standard error is that
  of the mean over disjoint blocks.
- **Denoising loss** (:func:`denoising_loss`): ``|eps_theta(x_t, t) - eps|^2`` per
  coordinate at fixed OU times, on training and on held-out points, the same noise at
  every snapshot (common random numbers), mean and s.e. over points.
- ``gamma`` (:func:`fit_power_law`): the least-squares slope of log tau_mem against log n
  (uncensored points), its 95 % interval from refitting on the bootstrap replicates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .seeding import numpy_generator

if TYPE_CHECKING:  # torch is imported inside the functions that use it: the rules read snapshot_steps
    import torch

    from .networks import EpsilonModel


def snapshot_steps(first: int, last: int, per_decade: int) -> list[int]:
    """Training steps of the weight snapshots: ``round(10 ** (k / per_decade))`` in
    ``[first, last]`` (distinct, increasing), then ``last``."""
    if last < 1 or first < 1 or per_decade < 1:
        raise ValueError("first, last and per_decade must be >= 1")
    steps: list[int] = []
    k = math.floor(per_decade * math.log10(first)) - 1  # from below: the rounded grid may hold first itself
    while (s := round(10 ** (k / per_decade))) <= last:
        if s >= first and (not steps or s > steps[-1]):
            steps.append(s)
        k += 1
    if not steps or steps[-1] != last:
        steps.append(last)
    return steps


# ----------------------------------------------------------------------------- per snapshot
def denoising_loss(model: EpsilonModel, a: torch.Tensor, times: Sequence[float], points: int, seed: int,
                   batch: int = 1024, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Denoising loss of ``model`` on the points a (m, d) at each OU time of ``times``:
    (mean (T,), s.e. (T,)) over points of ``|eps_theta(x_t, t) - eps|^2 / d``. Each point
    is noised ``ceil(points / m)`` times (so about ``points`` evaluations per time); the
    noise comes from ``generator(seed, i)`` for time i, the same at every snapshot."""
    import torch

    from .networks import evaluate_in_batches
    from .schedule import forward_noise
    from .seeding import generator

    m, d = a.shape
    reps = max(1, math.ceil(points / max(m, 1)))
    dev = torch.device(device)
    model = model.to(dev).eval()
    means, ses = np.empty(len(times)), np.empty(len(times))
    for i, t in enumerate(times):
        eps = torch.randn(reps, m, d, generator=generator(seed, i)).reshape(reps * m, d)
        rows = a.repeat(reps, 1)
        tt = torch.full((rows.shape[0],), float(t))
        xt = forward_noise(rows, tt, eps)
        pred = evaluate_in_batches(lambda xb, tb=float(t): model(xb, torch.full((xb.shape[0],), tb, device=xb.device))
                                   .float().reshape(xb.shape[0], -1), xt, batch, dev)
        per = ((pred - eps) ** 2).mean(1).reshape(reps, m).mean(0).double().numpy()  # per point
        means[i] = per.mean()
        ses[i] = per.std(ddof=1) / math.sqrt(m) if m > 1 else float("nan")
    return means, ses


def _median_width(ref: torch.Tensor, cap: int = 2000) -> float:
    import torch

    sub = ref[:cap].double()
    dist = torch.cdist(sub, sub)
    iu = torch.triu_indices(len(sub), len(sub), 1)
    return float(dist[iu[0], iu[1]].median())


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, width: float) -> float:
    import torch

    g = -0.5 / width**2
    kxx, kyy, kxy = (torch.exp(g * torch.cdist(p, q) ** 2) for p, q in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def kernel_distance(generated: torch.Tensor, reference: torch.Tensor, blocks: int = 10,
                    seed: int = 0) -> tuple[float, float, float]:
    """Unbiased MMD² between features of generated (m, f) and reference (r, f) samples with
    a Gaussian kernel of width the median distance between reference samples: (mean over
    ``blocks`` disjoint blocks, its s.e., the width). Both sets are shuffled with
    ``seed`` and split into as many blocks (each at least 2 rows)."""
    blocks = max(1, min(blocks, len(generated) // 2, len(reference) // 2))
    if blocks < 1 or len(generated) < 2 or len(reference) < 2:
        return float("nan"), float("nan"), float("nan")
    width = _median_width(reference)
    rng = numpy_generator(seed)
    gp = np.array_split(rng.permutation(len(generated)), blocks)
    rp = np.array_split(rng.permutation(len(reference)), blocks)
    g64, r64 = generated.double(), reference.double()
    vals = np.array([_mmd2_unbiased(g64[i], r64[j], width) for i, j in zip(gp, rp)])
    se = float(vals.std(ddof=1) / math.sqrt(blocks)) if blocks > 1 else float("nan")
    return float(vals.mean()), se, width


# ----------------------------------------------------------------------------- along training
def first_crossing(steps: np.ndarray, fraction: np.ndarray, threshold: float) -> float:
    """The step where ``fraction`` (S,) first exceeds ``threshold``, interpolated linearly
    in log(step) from the snapshot before; ``steps[0]`` when the first snapshot exceeds it,
    NaN when none does."""
    above = np.flatnonzero(np.asarray(fraction) > threshold)
    if not len(above):
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(steps[0])
    f0, f1 = float(fraction[i - 1]), float(fraction[i])
    l0, l1 = math.log(steps[i - 1]), math.log(steps[i])
    return float(math.exp(l0 + (threshold - f0) / (f1 - f0) * (l1 - l0)))


def tau_mem(steps: Sequence[int], memorised: Sequence[np.ndarray], threshold: float, n_boot: int,
            seed: int) -> dict:
    """``tau_mem`` from the memorised flags of every snapshot (``memorised[s]``: (m,) bool,
    row i the same trajectory at every snapshot: the same prior noise): the estimate, its
    95 % bootstrap percentile interval (trajectories resampled, the same rows at every
    snapshot; ``inf`` above when more than 2.5 % of the replicates never pass), the
    replicates (NaN: never passed), the number that never passed, and ``censored``:
    ``left`` when the first snapshot already passes (the estimate is then an upper bound),
    ``right`` when none does, else ``none``."""
    steps_a = np.asarray(steps, dtype=np.float64)
    flags = np.stack([np.asarray(f, dtype=np.float64) for f in memorised])  # (S, m): one sample set
    estimate = first_crossing(steps_a, flags.mean(1), threshold)
    m = flags.shape[1]
    idx = numpy_generator(seed).integers(0, m, size=(n_boot, m))
    boot = np.stack([f[idx].mean(1) for f in flags], axis=1)  # (n_boot, S), one resampling for all snapshots
    reps = np.array([first_crossing(steps_a, row, threshold) for row in boot])
    lo, hi = bootstrap_interval(reps)
    censored = "right" if math.isnan(estimate) else ("left" if flags[0].mean() > threshold else "none")
    return {"tau_mem": estimate, "tau_mem_lo": float(lo), "tau_mem_hi": float(hi),
            "replicates": reps, "never_passed": int(np.isnan(reps).sum()), "censored": censored}


def bootstrap_interval(replicates: Sequence[float | None]) -> tuple[float, float]:
    """95 % percentile interval of tau replicates (NaN or None: never passed, counted as
    beyond every snapshot): the outer order statistics at 2.5 % and 97.5 %, so an open
    upper end is ``inf``; (NaN, NaN) without replicates."""
    reps = np.asarray(replicates, dtype=np.float64)  # None (a JSON null) becomes NaN
    if not len(reps):
        return float("nan"), float("nan")
    filled = np.where(np.isnan(reps), np.inf, reps)
    return (float(np.percentile(filled, 2.5, method="lower")),
            float(np.percentile(filled, 97.5, method="higher")))


def tau_gen(steps: Sequence[int], quality: Sequence[float], quality_se: Sequence[float]) -> float:
    """The first snapshot whose quality (lower is better) is within two standard errors
    (combined with the best one's) of the best snapshot's; NaN without finite values."""
    q, se = np.asarray(quality, dtype=np.float64), np.asarray(quality_se, dtype=np.float64)
    ok = np.isfinite(q)
    if not ok.any():
        return float("nan")
    best = int(np.nanargmin(np.where(ok, q, np.inf)))
    tol = 2.0 * np.sqrt(np.nan_to_num(se) ** 2 + np.nan_to_num(se[best]) ** 2)
    close = np.flatnonzero(ok & (q - q[best] <= tol))
    return float(np.asarray(steps)[close[0]])


def fit_power_law(n: Sequence[float], tau: Sequence[float], replicates: Sequence[np.ndarray] | None = None,
                  use: Sequence[bool] | None = None) -> dict:
    """Least-squares fit of ``log tau = log A + gamma log n`` over the finite ``tau`` that
    ``use`` admits (default all; leave out left-censored points, whose tau is only an upper
    bound), at least two distinct n: ``gamma``, ``A``, and with ``replicates`` (per n, the
    bootstrap replicates of tau, NaN or inf where they never passed) the 95 % percentile
    interval of gamma refitted on the replicates in which every fitted n passed; the number
    of the others is ``replicates_unfit`` (when it exceeds 2.5 % the interval is optimistic:
    a larger n that sometimes never passes would pull gamma up)."""
    n_a, tau_a = np.asarray(n, dtype=np.float64), np.asarray(tau, dtype=np.float64)
    out = {"gamma": float("nan"), "prefactor": float("nan"), "gamma_lo": float("nan"), "gamma_hi": float("nan"),
           "fit_points": 0, "replicates_unfit": 0}
    ok = np.isfinite(tau_a) & (tau_a > 0)
    if use is not None:
        ok &= np.asarray(use, dtype=bool)
    if len(np.unique(n_a[ok])) < 2:
        return out
    x = np.log(n_a[ok])
    slope, icpt = np.polyfit(x, np.log(tau_a[ok]), 1)
    out.update(gamma=float(slope), prefactor=float(math.exp(icpt)), fit_points=int(ok.sum()))
    if replicates is not None and len(replicates):
        reps = np.stack([np.asarray(r, dtype=np.float64) for r in replicates], axis=1)[:, ok]  # (B, fitted n)
        complete = (np.isfinite(reps) & (reps > 0)).all(1)
        if complete.any():
            xc = x - x.mean()
            slopes = (np.log(reps[complete]) @ xc) / (xc @ xc)
            out.update(gamma_lo=float(np.percentile(slopes, 2.5)), gamma_hi=float(np.percentile(slopes, 97.5)))
        out["replicates_unfit"] = int((~complete).sum())
    return out
