"""Cloning experiments: the probability that two copies of one backward
trajectory, separated at time t and continued with independent noise, end with
the same label (class -> speciation phi(t); training point -> collapse phi_C(t)).

:func:`clone_shared_trunk` runs the trunk once, copies its state at every branch
time and continues one clone per branch: per pair it costs ``K + sum_j (K - i_j)``
score evaluations on a grid of K steps, against ``sum_j (K + (K - i_j))`` for
:func:`clone_rerun_per_branch`, the reference scheme that reruns the trunk from T
for every branch time.

The shard stages write raw labels (:func:`labels_table`) and pair 0's snapshots
(:func:`snapshot_table`); the gather reads the shards back (:func:`read_labels`) and
turns agreements into phi(t) with bootstrap errors (:func:`agreement_table`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from .bootstrap import finite_spread, percentile_interval, replicate_means, standard_error
from .errors import InputError
from .io import read_metadata
from .sampling import EVALS_PER_STEP, Sampler, tweedie
from .scores import Score
from .seeding import Stream, derive_seed, generator, numpy_generator, shard_blocks
from .theory import PHI_AT_T_S, crossing_time

Labeller = Callable[[torch.Tensor], torch.Tensor]
log = logging.getLogger("diffusion_regimes")


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
        gen = generator(seed, Stream.PAIRS, c)
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
        gen = generator(seed, Stream.BRANCH, j)
        x = sampler.run(score, sampler.prior(n_pairs, d, gen), gen, stop=int(i))
        x = sampler.run(score, torch.cat([x, x]), gen, start=int(i))
        labels = label(x)
        agree.append((labels[:n_pairs] == labels[n_pairs:]).numpy())
    times = sampler.grid[idx]
    sort = np.argsort(times)
    return CloneResult(times[sort], np.stack(agree)[sort], sampler.nfe - nfe0)


def rerun_per_branch_nfe(sampler: Sampler, branch_times: np.ndarray, n_pairs: int) -> int:
    """Score evaluations :func:`clone_rerun_per_branch` would take for the same pairs:
    ``n_pairs * e * sum_j (K + (K - i_j))`` on a grid of K steps with e evaluations per step
    (the baseline of the shared trunk)."""
    e = EVALS_PER_STEP[sampler.method]
    return int(n_pairs * e * sum(sampler.steps + (sampler.steps - i) for i in sampler.snap(branch_times)))


def correct_for_label_flips(phi: np.ndarray, eps, one_sided: bool = False) -> np.ndarray:
    """Agreement corrected for a labeller that flips each label independently with probability
    ``eps`` (its held-out error; a float, or one per row of ``phi``). Two noisy labels
    (cloning: both clones labelled): the observed ``phi_obs = phi + 2 eps (1 - eps) (1 - 2 phi)``
    inverted, ``phi = (phi_obs - 2 eps (1 - eps)) / (1 - 4 eps (1 - eps))``. One noisy label
    against a true one (``one_sided``, U-turns: the start label is the point's own):
    ``phi_obs = phi + eps (1 - 2 phi)``, ``phi = (phi_obs - eps) / (1 - 2 eps)``."""
    flip = np.asarray(eps, dtype=np.float64)
    flip = flip if one_sided else 2.0 * flip * (1.0 - flip)
    return (np.asarray(phi, dtype=np.float64) - flip) / (1.0 - 2.0 * flip)


def flip_replicates(eps: float, n_test: int | None, n_boot: int, seed: int) -> np.ndarray | float:
    """The labeller's error in each bootstrap replicate: its held-out set of ``n_test`` images
    resampled (Binomial(n_test, eps) / n_test), so the corrected phi's s.e. includes the
    error's uncertainty; ``eps`` itself when the held-out size is unknown. Shape (n_boot, 1)."""
    if not n_test:
        return eps
    return (numpy_generator(seed, Stream.BOOTSTRAP, "label-error").binomial(n_test, eps, size=n_boot)
            / n_test)[:, None]


def label_noise_from_latest_branch(phi_latest: float) -> float:
    """A diagnostic, not a measurement: the label noise of generated samples *if* the true phi
    were 1 at the latest branch time (the clones the same sample up to noisy labels):
    inverting ``phi = 1 - 2 eps (1 - eps)`` gives ``eps = (1 - sqrt(2 phi - 1)) / 2`` (0 for
    phi = 1, 1/2 for phi <= 1/2). It maps that phi to exactly 1, so the t_S it gives is an
    upper bound that holds only under that assumption; it is kept in the cloning metadata
    (``t_S_bound_phi_latest_1``), not in the summary."""
    return 0.5 * (1.0 - math.sqrt(max(2.0 * phi_latest - 1.0, 0.0)))


def add_agreement_columns(table: pd.DataFrame, name: str, times: np.ndarray, agree: np.ndarray, n_boot: int,
                          seed: int, flip: float = 0.0, flip_boot=None, one_sided: bool = False) -> dict:
    """Add ``phi_{name}``, ``phi_{name}_se``, ``phi_{name}_lo``, ``phi_{name}_hi`` to ``table``
    (one more level of agreement, or phi corrected for a labeller of error ``flip``), from
    :func:`agreement_table` with the same arguments; returns its scalars (the crossing)."""
    part, cross = agreement_table(times, agree, n_boot, seed, flip=flip, flip_boot=flip_boot, one_sided=one_sided)
    for col in ("phi", "phi_se", "phi_lo", "phi_hi"):
        table[col.replace("phi", f"phi_{name}")] = part[col].to_numpy()
    return cross


def agreement_table(times: np.ndarray, agree: np.ndarray, n_boot: int, seed: int,
                    level: float | None = PHI_AT_T_S, flip: float = 0.0, flip_boot=None,
                    one_sided: bool = False) -> tuple[pd.DataFrame, dict]:
    """phi(t) with bootstrap standard errors and 95 % percentile intervals.

    Pairs are resampled jointly across branch times, so the crossing of ``level``
    gets a bootstrap standard error too. With ``flip`` > 0, phi and every replicate are
    corrected for a labeller of that error rate (:func:`correct_for_label_flips`; ``one_sided``
    for U-turns), each replicate with its own error from ``flip_boot`` (n_boot, 1) when given
    (:func:`flip_replicates`). ``agree`` (K, P): bool, or float with NaN where a pair is not
    counted (a conditional level of agreement: phi is then a ratio of means, resampled
    together). Returns
    the table (``t, phi, phi_se, phi_lo, phi_hi, n_pairs``) and scalars (``crossing``,
    ``crossing_se`` over the replicates that cross, and ``crossing_missed``: the replicates
    whose phi never crosses ``level`` inside the branch times, left out of the s.e.).
    """
    K, P = agree.shape
    a = agree.astype(np.float32)
    counted = np.isfinite(a)
    if counted.all():
        phi = a.mean(1)
        boots = replicate_means(a, n_boot, seed)  # (n_boot, K): pairs resampled jointly across branch times
    else:  # a conditional level: NaN marks a pair not counted; the ratio of the two resampled means
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.nansum(a, 1) / counted.sum(1)
            boots = replicate_means(np.nan_to_num(a), n_boot, seed) / replicate_means(counted.astype(np.float32),
                                                                                     n_boot, seed)
    if flip > 0 or flip_boot is not None:
        phi = correct_for_label_flips(phi, flip, one_sided)
        boots = correct_for_label_flips(boots, flip if flip_boot is None else flip_boot, one_sided)
    lo, hi = percentile_interval(boots)
    table = pd.DataFrame({
        "t": times.astype(np.float64), "phi": phi.astype(np.float64),
        "phi_se": standard_error(boots) if n_boot > 1 else np.full(K, np.nan),
        "phi_lo": lo, "phi_hi": hi, "n_pairs": counted.sum(1).astype(np.int64)})
    scalars = {}
    if level is not None:
        se, missed = finite_spread(np.array([crossing_time(times, bp, level) for bp in boots]))
        scalars = {"crossing": crossing_time(times, phi, level), "crossing_se": se, "crossing_missed": missed}
    return table, scalars


def branch_times_ou(relative: list[float], t_S: float, unit: str = "t_S") -> np.ndarray:
    """Branch times in OU time from times in units of t_S (needs t_S > 0, i.e. Lambda > 1)
    or already in OU time (``unit="ou"``)."""
    if unit == "ou":
        return np.asarray(relative, dtype=np.float64)
    if t_S <= 0:
        raise InputError(f"t_S = 1/2 log Lambda = {t_S:.3g} <= 0, so branch times in units of t_S are "
                         "meaningless: raise the data's resolution (dataset.size) or scale")
    return np.asarray(relative, dtype=np.float64) * t_S


# ----------------------------------------------------------------------------- shard tables
def labels_table(res: CloneResult) -> pa.Table:
    """Raw labels of a cloning run: ``trunk_label`` (P,) and ``clone_label`` (K,) per pair."""
    K, P = res.clone_labels.shape
    return pa.table({"trunk_label": pa.array(res.trunk_labels.astype(np.int64)),
                     "clone_label": pa.FixedSizeListArray.from_arrays(
                         pa.array(np.ascontiguousarray(res.clone_labels.T).reshape(-1).astype(np.int64)), K)})


def read_labels(paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Concatenate shards' label tables: (times (K,), trunk labels (P,), clone labels (K, P),
    the shards' metadata)."""
    metas = [read_metadata(p, ("cloning_shard", "collapse_shard")) for p in paths]
    try:
        times = np.asarray(metas[0]["times"], dtype=np.float64)
        K = len(times)
        trunk, clone = [], []
        for p in paths:
            tab = pq.read_table(p, columns=["trunk_label", "clone_label"])
            trunk.append(tab.column("trunk_label").to_numpy())
            flat = tab.column("clone_label").combine_chunks().flatten().to_numpy() if tab.num_rows else np.empty(0)
            clone.append(flat.reshape(-1, K).T)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
        raise InputError(f"{paths[0]}: not a table of cloning labels ({type(err).__name__}: {err}); delete the "
                         "shards and re-run the cloning stage") from None
    return times, np.concatenate(trunk), np.concatenate(clone, 1).astype(np.int64), metas


def snapshot_table(res: CloneResult, grid_end: float, score: Score) -> pa.Table:
    """Pair 0 of a cloning run (columns t, kind, branch_t, x): the trunk at each
    branch time (``trunk``), its denoised estimate there (``trunk_denoised``, Tweedie),
    the final state of the clone made there (``clone_final``) and the trunk's final
    state (``trunk_final``). Only a run with block 0 has snapshots (else :func:`empty_snapshots`)."""
    K = len(res.times)
    snaps = res.snapshots
    trunk = torch.as_tensor(snaps["trunk"])
    denoised = torch.cat([tweedie(score, trunk[k:k + 1], float(t)) for k, t in enumerate(res.times)])
    rows = pd.DataFrame({
        "t": np.concatenate([res.times, res.times, np.full(K, grid_end), [grid_end]]),
        "kind": ["trunk"] * K + ["trunk_denoised"] * K + ["clone_final"] * K + ["trunk_final"],
        "branch_t": np.concatenate([res.times, res.times, res.times, [np.nan]])})
    flat = np.concatenate([snaps["trunk"], denoised.numpy(), snaps["clone_final"],
                           snaps["trunk_final"][None]]).astype(np.float32)
    return pa.Table.from_pandas(rows, preserve_index=False).append_column(
        "x", pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]))


def empty_snapshots(d: int) -> pa.Table:
    """A snapshot table without rows (shards other than the one holding pair 0)."""
    return pa.table({"t": pa.array([], pa.float64()), "kind": pa.array([], pa.string()),
                     "branch_t": pa.array([], pa.float64()),
                     "x": pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), d)})


# ----------------------------------------------------------------------------- the measurement
#: summary columns (name, key of the gathered metadata, dtype): one row per (experiment, score)
SUMMARY = (("t_S_measured", "t_S_measured", "Float64"), ("t_S_measured_se", "t_S_measured_se", "Float64"),
           ("t_S_measured_missed", "t_S_measured_missed", "Int64"), ("classifier_accuracy", "accuracy", "Float64"),
           ("t_S_measured_corrected", "t_S_measured_corrected", "Float64"),
           ("t_S_measured_corrected_se", "t_S_measured_corrected_se", "Float64"),
           ("model", "model", "string"))


def shard(score: Score, score_name: str, label: Labeller, accuracy: float | None, sampler: dict, d: int,
          t_S: float, cloning: dict, seed: int, exp: str, shard: int = 0) -> tuple[pa.Table, pa.Table, dict, dict]:
    """Pairs of shard ``shard`` of ``cloning.shards`` for a score model: (raw labels, the
    snapshots of pair 0 (empty unless this shard has block 0), results, config record)."""
    samp = Sampler.from_config(sampler)
    branch = branch_times_ou(cloning["branch_times"], t_S, cloning.get("time_unit", "t_S"))
    blocks = shard_blocks(cloning["n_pairs"], cloning["pair_batch"], shard, cloning.get("shards", 1))
    res = clone_shared_trunk(score, samp, branch, cloning["n_pairs"], d, label,
                             derive_seed(seed, exp, Stream.CLONING, score_name), cloning["pair_batch"],
                             progress=True, blocks=blocks)
    confidence = label.confidence_counts() if hasattr(label, "confidence_counts") else {}
    results = {"nfe": res.nfe, "times": res.times.tolist(), "accuracy": accuracy,
               "n_test": getattr(label, "n_test", None), "blocks": blocks, **confidence,
               "sampler_settings": samp.settings,
               "nfe_rerun_per_branch": rerun_per_branch_nfe(samp, branch, cloning["n_pairs"])}
    cfg = {"cloning": cloning, "sampler": samp.settings, "score": score_name, "shard": shard}
    snaps = snapshot_table(res, float(samp.grid[-1]), score) if res.snapshots else empty_snapshots(d)
    return labels_table(res), snaps, results, cfg


def gather(times: np.ndarray, trunk: np.ndarray, clone: np.ndarray, metas: list[dict], data_model, t_S: float,
           Lambda: float, cloning: dict, seed: int, exp: str, score_name: str) -> tuple[pd.DataFrame, dict, dict]:
    """The shards gathered: phi(t) with bootstrap errors, the measured t_S, the data model's
    extra levels of agreement (the hierarchical mixture's super-class and class within it),
    and for classes from a classifier phi corrected for its held-out error. Returns
    (table, results, config record)."""
    n_boot = cloning["n_bootstrap"]
    boot = derive_seed(seed, exp, Stream.BOOTSTRAP, score_name)
    agree = clone == trunk[None]
    table, cross = agreement_table(times, agree, n_boot, boot)
    levels = {}
    for name, level_agree in data_model.agreement_levels(trunk, clone).items():
        c = add_agreement_columns(table, name, times, level_agree, n_boot,
                                  derive_seed(seed, exp, Stream.BOOTSTRAP, score_name, name))
        levels.update({f"t_S_{name}_measured": c["crossing"], f"t_S_{name}_measured_se": c["crossing_se"],
                       f"t_S_{name}_measured_missed": c["crossing_missed"]})
    accuracy = metas[0]["accuracy"]
    if accuracy is not None:  # classes from a classifier: phi corrected for its held-out error as well
        eps, n_test = 1.0 - accuracy, metas[0].get("n_test")
        c = add_agreement_columns(table, "corrected", times, agree, n_boot, boot, flip=eps,
                                  flip_boot=flip_replicates(eps, n_test, n_boot, boot))
        labelled = sum(m.get("labelled", 0) for m in metas)
        # a diagnostic only: the t_S if phi were 1 at the latest branch time (label_noise_from_latest_branch)
        noise = label_noise_from_latest_branch(float(table["phi"].iloc[0]))
        _, g = agreement_table(times, agree, n_boot, boot, flip=noise)
        levels.update({"t_S_measured_corrected": c["crossing"], "t_S_measured_corrected_se": c["crossing_se"],
                       "label_noise_if_phi_latest_1": noise, "t_S_bound_phi_latest_1": g["crossing"],
                       "label_error": eps, "label_error_n_test": n_test,
                       "confidence_mean": sum(m.get("confidence_sum", 0.0) for m in metas) / max(labelled, 1),
                       "low_confidence_fraction": sum(m.get("low_confidence", 0) for m in metas) / max(labelled, 1)})
    if cross["crossing_missed"]:
        log.warning("cloning %s: %d of %d bootstrap replicates of phi never cross %.4f; the s.e. of t_S is "
                    "over the others", score_name, cross["crossing_missed"], n_boot, PHI_AT_T_S)
    results = {"nfe": int(sum(m["nfe"] for m in metas)), "t_S_measured": cross["crossing"],
               "t_S_measured_se": cross["crossing_se"], "t_S_measured_missed": cross["crossing_missed"],
               **levels, "t_S": t_S, "Lambda": Lambda,
               "level": PHI_AT_T_S, "accuracy": accuracy, "shards": len(metas),
               "nfe_rerun_per_branch": metas[0]["nfe_rerun_per_branch"]}
    cfg = {"cloning": {**metas[0]["config"]["cloning"], **cloning}, "sampler": metas[0]["sampler_settings"],
           "score": score_name}
    return table, results, cfg


# ----------------------------------------------------------------------------- t_S against d (a group)
def dimension_scaling(members: dict[str, tuple[dict, dict, dict, dict | None]]) -> tuple[pd.DataFrame, dict]:
    """The measured t_S of a group's members against their dimension d: ``members`` maps a
    member to the metadata of its subset, spectrum, theory and cloning (and U-turns, or
    None). Returns the table (one row per member, by d: ``d, t_S_measured, t_S_measured_se,
    t_U_measured, t_U_measured_se, t_S_theory, t_S_half_log_Lambda`` (of the sample's spectrum),
    ``t_S_exact_crossing, t_S_half_log_Lambda_population`` (where the model has one)) and
    the fit ``t_S = slope log d + intercept``, weighted least squares with the measured s.e.
    (``slope_se`` from the weights, scaled by the reduced chi-square when it exceeds 1), and
    the same fit of the theory's t_S."""
    rows = []
    for exp, (data, spec, theory, clon, uturn) in members.items():
        rows.append({"experiment": exp, "d": int(data["d"]), "t_S_measured": clon["t_S_measured"],
                     "t_S_measured_se": clon["t_S_measured_se"],
                     "t_U_measured": (uturn or {}).get("t_U_measured", float("nan")),
                     "t_U_measured_se": (uturn or {}).get("t_U_measured_se", float("nan")),
                     "t_S_theory": spec["t_S"], "t_S_half_log_Lambda": spec.get("t_S_half_log_Lambda", spec["t_S"]),
                     "t_S_exact_crossing": theory.get("t_S_exact_crossing", float("nan")),
                     "t_S_half_log_Lambda_population": (0.5 * math.log(theory["Lambda_population"])
                                                        if theory.get("Lambda_population") else float("nan"))})
    table = pd.DataFrame(rows).sort_values("d").reset_index(drop=True).astype({"t_U_measured": float,
                                                                               "t_U_measured_se": float})
    results = {"fit": "t_S = slope log d + intercept, weighted least squares (weights 1/se^2) over the members "
                      "whose t_S was measured; slope_se scaled by sqrt(reduced chi-square) when above 1"}
    for key, se_key in (("t_S_measured", "t_S_measured_se"), ("t_U_measured", "t_U_measured_se"),
                        ("t_S_theory", None)):
        ok = np.isfinite(table[key]) & (np.isfinite(table[se_key]) & (table[se_key] > 0) if se_key else True)
        x, y = np.log(table["d"][ok].to_numpy(float)), table[key][ok].to_numpy(float)
        fit = {"slope": float("nan"), "slope_se": float("nan"), "intercept": float("nan"), "points": int(ok.sum())}
        if len(np.unique(x)) >= 2:
            w = 1 / table[se_key][ok].to_numpy(float) ** 2 if se_key else np.ones_like(x)
            A = np.stack([x, np.ones_like(x)], 1)
            cov = np.linalg.inv(A.T @ (w[:, None] * A))
            slope, intercept = cov @ (A.T @ (w * y))
            dof = len(x) - 2
            chi2 = float((w * (y - slope * x - intercept) ** 2).sum())
            scale = math.sqrt(max(1.0, chi2 / dof)) if dof > 0 and se_key else 1.0
            fit.update(slope=float(slope), intercept=float(intercept),
                       slope_se=float(math.sqrt(cov[0, 0]) * scale) if se_key else float("nan"),
                       chi2_reduced=chi2 / dof if dof > 0 and se_key else float("nan"))
        results[key.replace("_measured", "")] = fit
    return table, results
