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
  (uncensored points; with ``replicates`` independent runs per n, all of them), its 95 %
  interval from a two-level bootstrap: runs resampled within each n, each with its own
  trajectory-bootstrap replicate, so the interval holds the scatter between runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .bootstrap import percentile_interval, replicate_means
from .seeding import numpy_generator

if TYPE_CHECKING:  # torch is imported inside the functions that use it: the rules read snapshot_steps
    import torch

    from .scores import Score


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
def denoising_loss(score: Score, a: torch.Tensor, times: Sequence[float], points: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Denoising loss of a score model on the points a (m, d) at each OU time of ``times``:
    (mean (T,), s.e. (T,)) over points of ``|eps_hat(x_t, t) - eps|^2 / d``, with eps_hat the
    noise the model predicts (:func:`diffusion_regimes.networks.predicted_noise`: a network's
    own, else ``-sqrt(Delta_t)`` times any score) and the per-sample loss of
    :func:`diffusion_regimes.predictions.denoising_loss`. Each point is noised
    ``ceil(points / m)`` times (so about ``points`` evaluations per time); the noise comes from
    ``generator(seed, i)`` for time i, the same at every snapshot."""
    import torch

    from .networks import predicted_noise
    from .predictions import denoising_loss as per_sample_loss
    from .schedule import forward_noise
    from .seeding import generator

    m, d = a.shape
    reps = max(1, math.ceil(points / max(m, 1)))
    means, ses = np.empty(len(times)), np.empty(len(times))
    for i, t in enumerate(times):
        eps = torch.randn(reps, m, d, generator=generator(seed, i)).reshape(reps * m, d)
        rows = a.repeat(reps, 1)
        xt = forward_noise(rows, torch.full((rows.shape[0],), float(t)), eps)
        per = per_sample_loss(predicted_noise(score, xt, float(t)), eps).reshape(reps, m).mean(0).double().numpy()
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
    boot = replicate_means(flags, n_boot, seed)  # (n_boot, S), one resampling for all snapshots
    reps = np.array([first_crossing(steps_a, row, threshold) for row in boot])
    lo, hi = bootstrap_interval(reps)
    censored = "right" if math.isnan(estimate) else ("left" if flags[0].mean() > threshold else "none")
    return {"tau_mem": estimate, "tau_mem_lo": float(lo), "tau_mem_hi": float(hi),
            "replicates": reps, "never_passed": int(np.isnan(reps).sum()), "censored": censored}


def bootstrap_interval(replicates: Sequence[float | None]) -> tuple[float, float]:
    """95 % percentile interval of tau replicates (NaN or None: never passed, counted as
    beyond every snapshot): the outer order statistics at 2.5 % and 97.5 %, so an open
    upper end is ``inf``; (NaN, NaN) without replicates."""
    return percentile_interval(np.asarray(replicates, dtype=np.float64), open_ended=True)  # None (JSON) -> NaN


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
                  use: Sequence[bool] | None = None, seed: int = 0) -> dict:
    """Least-squares fit of ``log tau = log A + gamma log n`` over the finite ``tau`` that
    ``use`` admits (default all; leave out left-censored points, whose tau is only an upper
    bound), at least two distinct n. ``n`` may repeat: independent runs (replicates) at one n.

    With ``replicates`` (per point, the bootstrap replicates of its tau over generated
    trajectories, NaN or inf where they never passed), gamma's 95 % percentile interval comes
    from a two-level bootstrap: in replicate b, the runs at each n are resampled with
    replacement and each drawn run contributes its own bootstrap replicate b, so the interval
    holds the scatter between runs and the sampling noise of each (with one run per n it is
    the refit on the trajectory bootstrap alone). Replicates in which a drawn run never passed
    are left out and counted in ``replicates_unfit`` (when it exceeds 2.5 % the interval is
    optimistic: a larger n that sometimes never passes would pull gamma up). Returns
    ``gamma``, ``prefactor`` A, ``gamma_lo``, ``gamma_hi``, ``fit_points``, ``fit_n`` (distinct
    n fitted), ``runs_per_n`` (the most runs at one n) and ``replicates_unfit``."""
    n_a, tau_a = np.asarray(n, dtype=np.float64), np.asarray(tau, dtype=np.float64)
    out = {"gamma": float("nan"), "prefactor": float("nan"), "gamma_lo": float("nan"), "gamma_hi": float("nan"),
           "fit_points": 0, "fit_n": 0, "runs_per_n": 0, "replicates_unfit": 0}
    ok = np.isfinite(tau_a) & (tau_a > 0)
    if use is not None:
        ok &= np.asarray(use, dtype=bool)
    distinct, counts = np.unique(n_a[ok], return_counts=True)
    if len(distinct) < 2:
        return out
    x = np.log(n_a[ok])
    slope, icpt = np.polyfit(x, np.log(tau_a[ok]), 1)
    out.update(gamma=float(slope), prefactor=float(math.exp(icpt)), fit_points=int(ok.sum()),
               fit_n=len(distinct), runs_per_n=int(counts.max()))
    if replicates is not None and len(replicates):
        reps = np.stack([np.asarray(r, dtype=np.float64) for r in replicates], axis=1)[:, ok]  # (B, fitted points)
        rng = numpy_generator(seed)
        # runs drawn within each n (their count kept, so the n values and xc are the same in every replicate)
        draw = np.concatenate([rng.choice(np.flatnonzero(n_a[ok] == v), size=(len(reps), c))
                               for v, c in zip(distinct, counts)], axis=1)  # (B, fitted points)
        xc = x[draw[0]] - x.mean()
        chosen = np.take_along_axis(reps, draw, axis=1)
        complete = (np.isfinite(chosen) & (chosen > 0)).all(1)
        if complete.any():
            slopes = (np.log(chosen[complete]) @ xc) / (xc @ xc)
            lo, hi = percentile_interval(slopes)
            out.update(gamma_lo=float(lo), gamma_hi=float(hi))
        out["replicates_unfit"] = int((~complete).sum())
    return out


# ----------------------------------------------------------------------------- the study's jobs
def rows_at_most(x: torch.Tensor, most: int, seed: int) -> torch.Tensor:
    """At most ``most`` rows of x, a fixed random choice when there are more."""
    from .seeding import generator

    if len(x) <= most:
        return x
    import torch

    return x[torch.randperm(len(x), generator=generator(seed))[:most]]


def quality_features(classifier_path: str | None, device: str | None):
    """The feature map of the quality distance: the classifier's penultimate features for
    images, the coordinates themselves for vectors."""
    if classifier_path is None:
        return lambda v: v
    from .classifier import classifier_features, load_classifier

    net, shape, _ = load_classifier(classifier_path)
    return lambda v: classifier_features(net, shape, v, device=device or "auto")


def measure_snapshot(score: Score, score_name: str, x: torch.Tensor, ref: torch.Tensor, features, sampler: dict,
                     memorisation: dict, block: int, seed: int, exp: str, step: int) -> tuple[object, dict, dict]:
    """One weight snapshot measured: generated samples tracked against the training and the
    reference points (memorisation, collapse times; the same prior noise at every snapshot),
    the quality distance of the samples to the reference set (in ``features``), and the
    denoising loss on training and held-out points per noise level. Returns (one row per
    sample: the collapse table's columns and ``sample``, the denoised sample, for the first
    ``n_show``; results; config record)."""
    import pyarrow as pa

    from .collapse import collapse_table, track_nearest
    from .sampling import Sampler
    from .scores import EmpiricalScore
    from .seeding import Stream, derive_seed

    train_set, reference = EmpiricalScore(x, block), EmpiricalScore(ref, block)
    samp = Sampler.from_config(sampler)
    track = track_nearest(score, samp, train_set, memorisation["n_samples"],
                          derive_seed(seed, exp, Stream.MEMORISATION, score_name), memorisation["track_every"],
                          memorisation["batch"], progress=True, reference=reference)
    table = collapse_table(track, train_set, reference)
    quality, quality_se, width = kernel_distance(features(track.x0), features(ref), memorisation["quality_blocks"],
                                                 derive_seed(seed, exp, Stream.QUALITY))
    levels = [float(t) for t in memorisation["loss_times"]]
    losses = {}
    for name, pts in (("train", x), ("heldout", ref)):
        loss_seed = derive_seed(seed, exp, Stream.DENOISING_LOSS, name)
        mean, se = denoising_loss(score, rows_at_most(pts, memorisation["loss_points"], loss_seed), levels,
                                  memorisation["loss_points"], loss_seed)
        losses.update({f"loss_{name}": mean.tolist(), f"loss_{name}_se": se.tolist()})
    show = min(memorisation["n_show"], len(table))
    samples = [track.x0[i].tolist() for i in range(show)] + [None] * (len(table) - show)
    out = pa.Table.from_pandas(table, preserve_index=False).append_column(
        "sample", pa.array(samples, type=pa.list_(pa.float32())))
    results = {"step": int(step), "quality": quality, "quality_se": quality_se, "kernel_width": width,
               "loss_times": levels, **losses, "nfe": samp.nfe, "n_samples": len(table),
               "memorised_fraction": float(table["memorised"].mean())}
    return out, results, {"memorisation": memorisation, "sampler": samp.settings, "score": score_name,
                          "step": int(step)}


def gather(snapshots: dict[int, tuple[object, dict]], x: torch.Tensor, ref: torch.Tensor, features,
           memorisation: dict, n: int, seed: int, exp: str, score_name: str) -> tuple[object, object, dict]:
    """The snapshots of one experiment gathered (``snapshots``: step -> (table, metadata)):
    per step the memorised fraction (bootstrap s.e., and against the reference set), the
    collapse time of memorised trajectories, the quality distance and the denoising losses
    (``curve``; per level in ``loss``); tau_mem with its bootstrap interval, replicates and
    censoring, tau_gen (quality) and tau_gen_loss (held-out loss), with the quality of the
    training set itself (the score of samples that copy it) as control. Returns (curve,
    loss table, results)."""
    import pandas as pd

    from .collapse import MEMORISED_RATIO, collapse_statistics
    from .seeding import Stream, derive_seed

    steps = sorted(snapshots)
    n_boot = memorisation["n_bootstrap"]
    rows, flags, loss_rows = [], [], []
    for step in steps:
        table, meta = snapshots[step]
        st = collapse_statistics(table, n_boot, derive_seed(seed, exp, Stream.BOOTSTRAP_MEMORISED, score_name, step))
        flags.append(table["memorised"].to_numpy(dtype=bool))
        lt, lh = np.asarray(meta["loss_train"]), np.asarray(meta["loss_heldout"])
        lt_se, lh_se = np.asarray(meta["loss_train_se"]), np.asarray(meta["loss_heldout_se"])
        rows.append({"step": step, "memorised_fraction": st["memorised_fraction"],
                     "memorised_fraction_se": st["memorised_fraction_se"],
                     "memorised_fraction_null": st["memorised_fraction_null"],
                     "t_C_memorised": st["t_C_memorised"], "t_C_memorised_se": st["t_C_memorised_se"],
                     "t_C_null": st["t_C_null"], "quality": meta["quality"], "quality_se": meta["quality_se"],
                     "loss_train": float(lt.mean()), "loss_heldout": float(lh.mean()),
                     "loss_gap": float((lh - lt).mean()),
                     "loss_gap_se": float(np.sqrt((lh_se**2 + lt_se**2).sum()) / len(lt))})
        loss_rows += [{"step": step, "t": t, "loss_train": a, "loss_train_se": b, "loss_heldout": c,
                       "loss_heldout_se": e} for t, a, b, c, e in zip(meta["loss_times"], lt, lt_se, lh, lh_se)]
    curve = pd.DataFrame(rows)
    tm = tau_mem(steps, flags, memorisation["threshold"], n_boot,
                 derive_seed(seed, exp, Stream.BOOTSTRAP_TAU, score_name))
    quality_seed = derive_seed(seed, exp, Stream.QUALITY)
    control, control_se, _ = kernel_distance(features(rows_at_most(x, len(ref), quality_seed)), features(ref),
                                             memorisation["quality_blocks"], quality_seed)
    heldout = curve["loss_heldout"].to_numpy(dtype=np.float64)
    tau_gen_loss = float(steps[int(np.nanargmin(heldout))]) if np.isfinite(heldout).any() else float("nan")
    results = {"n": int(n), "threshold": memorisation["threshold"],
               "tau_mem": tm["tau_mem"], "tau_mem_lo": tm["tau_mem_lo"], "tau_mem_hi": tm["tau_mem_hi"],
               "tau_mem_censored": tm["censored"],
               "tau_mem_never_passed": tm["never_passed"], "tau_mem_replicates": tm["replicates"].tolist(),
               "tau_gen": tau_gen(steps, curve["quality"], curve["quality_se"]),
               "tau_gen_loss": tau_gen_loss, "quality_training_set": control,
               "quality_training_set_se": control_se, "steps": list(steps),
               "criterion": f"memorised: d1/d2 < {MEMORISED_RATIO:.4g}; tau_mem: memorised fraction > threshold, "
                            "interpolated in log(step); tau_gen: first snapshot within 2 s.e. of the best quality",
               "quality_measure": "unbiased MMD^2, Gaussian kernel of width the median reference distance"}
    return curve, pd.DataFrame(loss_rows), results


#: the float columns of the group table
_GROUP_FLOATS = ("tau_mem", "tau_mem_lo", "tau_mem_hi", "tau_gen", "tau_gen_loss", "t_C_memorised_last",
                 "t_C_memorised_last_se", "t_C_null_last", "t_C_entropy", "t_C_entropy_lo", "t_C_entropy_hi",
                 "t_C_theory_gm", "t_C_theory_gm_finite_d")


def group(members: dict[str, tuple[object, dict, dict, dict]]) -> tuple[object, dict]:
    """One table per group of n (``members``: experiment -> (its curve, the curve's metadata,
    the entropy's and the theory's metadata)): per member ``n, tau_mem, tau_mem_lo,
    tau_mem_hi, tau_gen`` (training steps), ``tau_gen_loss``, and at the last snapshot the
    memorised fraction and the collapse time of memorised trajectories beside the entropy's
    t_C (and its band) and the mixture's closed forms, and ``tau_mem_censored`` (``left``: the
    first snapshot already passes; ``right``: none does), sorted by n (several rows per n
    with ``memorisation.replicates``); and the fit tau_mem = A n^gamma with gamma's bootstrap
    interval and the scatter between runs per n (``runs``, :func:`runs_per_n`) (the results)."""
    import pandas as pd

    rows, reps = [], []
    for exp, (curve, meta, ent, th) in members.items():
        last = curve.iloc[-1]
        replicates = np.asarray(meta["tau_mem_replicates"], dtype=np.float64)  # JSON nulls (never passed): NaN
        lo, hi = bootstrap_interval(replicates)  # recomputed: the metadata's JSON has no inf
        rows.append({"experiment": exp, "n": int(meta["n"]), "tau_mem": meta["tau_mem"],
                     "tau_mem_lo": lo, "tau_mem_hi": hi, "tau_gen": meta["tau_gen"],
                     "tau_mem_censored": meta["tau_mem_censored"],
                     "tau_gen_loss": meta["tau_gen_loss"], "last_step": int(last["step"]),
                     "memorised_fraction_last": float(last["memorised_fraction"]),
                     "memorised_fraction_last_se": float(last["memorised_fraction_se"]),
                     "t_C_memorised_last": float(last["t_C_memorised"]),
                     "t_C_memorised_last_se": float(last["t_C_memorised_se"]), "t_C_null_last": float(last["t_C_null"]),
                     "t_C_entropy": ent["t_C"], "t_C_entropy_lo": ent.get("t_C_lo"),
                     "t_C_entropy_hi": ent.get("t_C_hi"), "t_C_theory_gm": th.get("t_C"),
                     "t_C_theory_gm_finite_d": th.get("t_C_finite_d")})
        reps.append(replicates)
    table = pd.DataFrame(rows).astype(dict.fromkeys(_GROUP_FLOATS, "float64"))
    order = np.argsort(table["n"].to_numpy(), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    use = table["tau_mem_censored"].to_numpy() != "left"
    fit = fit_power_law(table["n"], table["tau_mem"], [reps[i] for i in order], use=use)
    results = {**fit, "members": list(table["experiment"]), "runs": runs_per_n(table, use),
               "fit": "least squares of log tau_mem on log n over every run, left-censored points (the first "
                      "snapshot already past the threshold) left out; 95 % interval: percentiles of the slope "
                      "refitted on a two-level bootstrap (runs resampled within each n, each with its own "
                      "trajectory-bootstrap replicate) in the replicates where every drawn run passes"}
    return table, results


def runs_per_n(table, use: np.ndarray) -> list[dict]:
    """Per n of a group table (rows: runs): the number of runs, of uncensored finite tau_mem,
    their geometric mean and the standard deviation of log tau_mem between runs (NaN with
    fewer than two): the scatter between independent runs that one run's interval omits."""
    out = []
    tau = table["tau_mem"].to_numpy(dtype=np.float64)
    for n in np.unique(table["n"].to_numpy()):
        at = table["n"].to_numpy() == n
        good = at & use & np.isfinite(tau) & (tau > 0)
        logs = np.log(tau[good])
        out.append({"n": int(n), "runs": int(at.sum()), "runs_fitted": int(good.sum()),
                    "tau_mem_geometric_mean": float(np.exp(logs.mean())) if len(logs) else float("nan"),
                    "log_tau_mem_sd_between_runs": float(logs.std(ddof=1)) if len(logs) > 1 else float("nan")})
    return out
