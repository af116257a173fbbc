"""The workflow's stages: one function per Snakemake rule.

Each stage takes ``input`` and ``output`` mappings (rule name -> path) and its
hyperparameters as keyword arguments (the rule's ``params``), reads its inputs,
computes, and writes its outputs atomically with metadata
(:mod:`diffusion_regimes.io`). Rules only wire files to these functions.
Random stages take the experiment name ``exp`` and the master ``seed``; their
generators derive from both (:mod:`diffusion_regimes.seeding`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from . import paths
from .cloning import agreement_table, clone_shared_trunk
from .collapse import collapse_table, track_nearest
from .config import ANALYTIC_SOURCES, MEMORISING_SCORES, NETWORK_SCORES
from .curie_weiss import CurieWeissScore, cw_lambda
from .data import gm_direction, hierarchical_centres, image_shape, load_subset, make_subset
from .entropy import collapse_level, entropy_collapse_time, excess_entropy
from .io import (
    InputError,
    atomic_path,
    load_checkpoint,
    make_metadata,
    read_metadata,
    read_table,
    save_checkpoint,
    write_table,
)
from .models import build_classifier, build_unet, count_parameters
from .sampling import Sampler, sample_projections, tweedie
from .schedule import speciation_time
from .scores import EmpiricalScore, GaussianMixtureScore, MixtureScore, NetworkScore
from .seeding import derive_seed, shard_blocks
from .spectrum import bulk_variance, covariance_eigenvalues, covariance_trace, spectrum_table
from .theory import (
    PHI_CROSSING,
    crossing_time,
    gm_collapse_time,
    gm_excess_entropy,
    gm_lambda,
    gm_phi,
    hierarchical_lambdas,
    hierarchical_phi,
)
from .training import classifier_labeller, train_classifier, train_unet

log = logging.getLogger("diffusion_regimes")


# ----------------------------------------------------------------------------- data
def subset(input: dict, output: dict, exp: str, dataset: dict, seed: int) -> None:
    table, meta = make_subset(dataset, derive_seed(seed, exp, "subset"))
    write_table(table, output["data"], make_metadata("subset", {"dataset": dataset}, seed, meta))
    log.info("subset: n=%d d=%d classes=%s", meta["n"], meta["d"], meta["class_counts"])


def spectrum(input: dict, output: dict, spectrum: dict) -> None:
    """Top of the covariance spectrum over all channels (the table) and Lambda over
    channel 0 only; ``spectrum.lambda_from`` says which Lambda sets t_S."""
    x, _, meta = load_subset(input["data"])
    n, d = x.shape
    ev = covariance_eigenvalues(x, spectrum["top"], spectrum["method"])
    shape = meta["shape"]
    if len(shape) == 3 and shape[0] > 1:
        ev0 = covariance_eigenvalues(x.view(n, shape[0], -1)[:, 0].contiguous(), 1, spectrum["method"])
        lambda0 = float(ev0[0])
    else:
        lambda0 = float(ev[0])
    lambda_all = float(ev[0])
    Lambda = lambda_all if spectrum["lambda_from"] == "all" else lambda0
    trace = covariance_trace(x)
    results = {"Lambda": Lambda, "t_S": speciation_time(Lambda), "Lambda_all": lambda_all,
               "Lambda_channel0": lambda0, "t_S_channel0": speciation_time(lambda0),
               "lambda_from": spectrum["lambda_from"], "trace": trace,
               "bulk_variance": bulk_variance(lambda_all, trace, d), "n": n, "d": d}
    write_table(spectrum_table(ev[:spectrum["top"]]), output["spectrum"],
                make_metadata("spectrum", spectrum, None, results))
    log.info("spectrum: Lambda=%.4g (all channels %.4g, channel 0 %.4g) t_S=%.4g", Lambda, lambda_all,
             lambda0, results["t_S"])


# ----------------------------------------------------------------------------- models
def train(input: dict, output: dict, exp: str, model: dict, train: dict, seed: int, state: str,
          device: str = "auto", progress: bool = True) -> None:
    x, _, meta = load_subset(input["data"])
    shape = image_shape(meta)
    net, loss_log, info = train_unet(x, shape, model, train, derive_seed(seed, exp, "train"), state, progress,
                                     device)
    cfg = {"model": model, "train": train}
    results = {"parameters": count_parameters(net), "final_loss": float(loss_log["loss"].tail(100).mean()),
               "steps": int(loss_log["step"].iloc[-1]), **info}
    write_table(loss_log, output["log"], make_metadata("train", cfg, seed, results))
    save_checkpoint({"state_dict": net.state_dict(), "model": model, "shape": list(shape),
                     "metadata": make_metadata("train", cfg, seed, results)}, output["model"])
    rate = info["steps_per_second"]
    log.info("train: %d parameters, final loss %.4f, %s steps/s on %s (%s)", results["parameters"],
             results["final_loss"], f"{rate:.2f}" if rate else "no new", info["device"], info["precision"])


def classifier(input: dict, output: dict, exp: str, classifier: dict, seed: int, device: str = "auto",
               progress: bool = True) -> None:
    x, labels, meta = load_subset(input["data"])
    shape = image_shape(meta)
    net, acc, n_test = train_classifier(x, labels, shape, classifier, derive_seed(seed, exp, "classifier"),
                                        progress, device)
    results = {"accuracy": acc, "n_test": n_test, "parameters": count_parameters(net), "arch": classifier["arch"]}
    save_checkpoint({"state_dict": net.state_dict(), "config": classifier, "shape": list(shape),
                     "accuracy": acc, "metadata": make_metadata("classifier", classifier, seed, results)},
                    output["classifier"])
    log.info("classifier %s: held-out accuracy %.4f on %d images", classifier["arch"], acc, n_test)


def _load_weights(net: torch.nn.Module, ckpt: dict, path: str | None, stage: str) -> torch.nn.Module:
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit the model it describes "
                         f"({str(err).splitlines()[0][:120]}); delete it and re-run {stage}") from None
    return net


def _exact_model(meta: dict):
    """The exact score of a solvable data model (it also has ``classify``)."""
    source = meta["source"]
    if source == "gaussian_mixture":
        return GaussianMixtureScore(gm_direction(meta), meta["sigma"])
    if source == "hierarchical_mixture":
        return MixtureScore(hierarchical_centres(meta["d"], meta["mu_tilde"], meta["mu_tilde2"]), meta["sigma"])
    if source == "curie_weiss":
        return CurieWeissScore(meta["d"], meta["beta"], meta["J"], meta["h"])
    raise InputError(f"source {source!r} has no exact score: use the empirical or unet score")


def _load_score(score: str, x: torch.Tensor, meta: dict, block: int | None, model_path: str | None,
                sampler: dict | None = None, device: str | None = None):
    if score == "exact":
        return _exact_model(meta)
    if score == "empirical":
        return EmpiricalScore(x, block)
    if score in NETWORK_SCORES:
        ckpt = load_checkpoint(model_path, required=("state_dict", "model", "shape"))
        net = _load_weights(build_unet(ckpt["model"], ckpt["shape"][0]), ckpt, model_path, "train")
        sampler = sampler or {}
        return NetworkScore(net, tuple(ckpt["shape"]), sampler.get("batch_size", 512), device or "auto",
                            sampler.get("precision", "fp32"))
    raise InputError(f"unknown score model {score!r}")


def _labeller(meta: dict, classifier_path: str | None, min_accuracy: float | None, device: str | None = None):
    """(labeller, held-out accuracy): the closed-form class of a solvable model (the sign of
    the projection on m, the nearest centre, the sign of the magnetisation; accuracy None),
    else the trained classifier, refused below ``min_accuracy``."""
    if meta["source"] in ANALYTIC_SOURCES:
        return _exact_model(meta).classify, None
    ckpt = load_checkpoint(classifier_path, required=("state_dict", "config", "shape", "accuracy"))
    if ckpt["accuracy"] < (min_accuracy or 0.0):
        raise InputError(f"{classifier_path}: classifier held-out accuracy {ckpt['accuracy']:.3f} is "
                         f"below classifier.min_accuracy={min_accuracy}; train it longer "
                         "(classifier.epochs), try classifier.arch: resnet18, or lower the threshold")
    shape = tuple(ckpt["shape"])
    net = _load_weights(build_classifier(ckpt["config"], shape), ckpt, classifier_path, "classifier")
    return classifier_labeller(net.eval(), shape, device=device or "auto"), float(ckpt["accuracy"])


def _branch_times(relative: list[float], spec: dict, unit: str = "t_S") -> np.ndarray:
    """Branch times in OU time from times in units of t_S (needs t_S > 0, Lambda > 1)
    or already in OU time (``unit="ou"``)."""
    if unit == "ou":
        return np.asarray(relative, dtype=np.float64)
    if spec["t_S"] <= 0:
        raise InputError(f"Lambda = {spec['Lambda']:.3g} <= 1 gives t_S = 1/2 log Lambda <= 0, so branch "
                         "times in units of t_S are meaningless: raise the data's resolution "
                         "(dataset.size) or scale")
    return np.asarray(relative, dtype=np.float64) * spec["t_S"]


def _snapshot_table(res, grid_end: float, score) -> pa.Table:
    """Pair 0 of a cloning run (columns t, kind, branch_t, x): the trunk at each
    branch time (``trunk``), its denoised estimate there (``trunk_denoised``, Tweedie),
    the final state of the clone made there (``clone_final``) and the trunk's final
    state (``trunk_final``)."""
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


# ----------------------------------------------------------------------------- cloning
# Sampling stages run as shards (``{stage}_shard``: a contiguous range of blocks of
# pairs, trajectories or time points, each block with its own generator) and a
# gather stage that merges them; the merged result is identical to one job's.

def _labels_table(res) -> pa.Table:
    """Raw labels of a cloning run: pair, trunk_label, clone_label (K,) per pair."""
    K, P = res.clone_labels.shape
    return pa.table({"trunk_label": pa.array(res.trunk_labels.astype(np.int64)),
                     "clone_label": pa.FixedSizeListArray.from_arrays(
                         pa.array(np.ascontiguousarray(res.clone_labels.T).reshape(-1).astype(np.int64)), K)})


def _read_labels(paths_: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Concatenate shards' label tables: (times (K,), trunk labels (P,), clone labels (K, P), metadata)."""
    metas = [read_metadata(p) for p in paths_]
    times = np.asarray(metas[0]["times"], dtype=np.float64)
    K = len(times)
    trunk, clone = [], []
    for p in paths_:
        tab = pq.read_table(p)
        trunk.append(tab.column("trunk_label").to_numpy())
        flat = tab.column("clone_label").combine_chunks().flatten().to_numpy() if tab.num_rows else np.empty(0)
        clone.append(flat.reshape(-1, K).T)
    return times, np.concatenate(trunk), np.concatenate(clone, 1).astype(np.int64), metas


def _concat_shards(paths_: list[str], key: str) -> pd.DataFrame:
    """The rows of shards' tables, in the order of ``key``."""
    table = pd.concat([read_table(p)[0] for p in paths_], ignore_index=True)
    return table.sort_values(key, kind="stable").reset_index(drop=True)


def _empty_snapshots(d: int) -> pa.Table:
    return pa.table({"t": pa.array([], pa.float64()), "kind": pa.array([], pa.string()),
                     "branch_t": pa.array([], pa.float64()),
                     "x": pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), d)})


def cloning_shard(input: dict, output: dict, exp: str, score: str, cloning: dict, sampler: dict,
                  block: int | None, min_accuracy: float | None, seed: int, shard: int = 0,
                  device: str | None = None) -> None:
    """Pairs of shard ``shard`` of ``cloning.shards``: raw labels and (shard 0) the snapshots."""
    x, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"])
    fn = _load_score(score, x, meta, block, input.get("model"), sampler, device)
    label, accuracy = _labeller(meta, input.get("classifier"), min_accuracy, device)
    samp = Sampler.from_config(sampler)
    branch = _branch_times(cloning["branch_times"], spec, cloning.get("time_unit", "t_S"))
    blocks = shard_blocks(cloning["n_pairs"], cloning["pair_batch"], shard, cloning.get("shards", 1))
    res = clone_shared_trunk(fn, samp, branch, cloning["n_pairs"], x.shape[1], label,
                             derive_seed(seed, exp, "cloning", score), cloning["pair_batch"], progress=True,
                             blocks=blocks)
    results = {"nfe": res.nfe, "times": res.times.tolist(), "accuracy": accuracy, "blocks": blocks,
               "sampler_settings": samp.settings,
               "nfe_rerun_per_branch": int(cloning["n_pairs"] * sum(
                   samp.steps + (samp.steps - i) for i in samp.snap(branch)))}
    cfg = {"cloning": cloning, "sampler": samp.settings, "score": score, "shard": shard}
    write_table(_labels_table(res), output["labels"], make_metadata("cloning_shard", cfg, seed, results))
    snaps = _snapshot_table(res, float(samp.grid[-1]), fn) if res.snapshots else _empty_snapshots(x.shape[1])
    write_table(snaps, output["snapshots"], make_metadata("cloning_shard", cfg, seed, {"shape": meta["shape"]}))
    log.info("cloning %s shard %d: blocks %s, nfe %d", score, shard, blocks, res.nfe)


def cloning(input: dict, output: dict, exp: str, score: str, cloning: dict, seed: int) -> None:
    """Gather the shards: phi(t) with bootstrap errors, the measured t_S (and, for the
    hierarchical mixture, agreement on the super-class and on the class within it)."""
    meta = read_metadata(input["data"])
    spec = read_metadata(input["spectrum"])
    times, trunk, clone, metas = _read_labels(list(input["labels"]))
    table, cross = agreement_table(times, clone == trunk[None], cloning["n_bootstrap"],
                                   derive_seed(seed, exp, "bootstrap", score))
    levels = {}
    if meta["source"] == "hierarchical_mixture":  # agreement on the super-class and on the class within it
        for name, agree in (("super", clone // 2 == trunk[None] // 2), ("sub", clone % 2 == trunk[None] % 2)):
            part, c = agreement_table(times, agree, cloning["n_bootstrap"],
                                      derive_seed(seed, exp, "bootstrap", score, name))
            for col in ("phi", "phi_se", "phi_lo", "phi_hi"):
                table[col.replace("phi", f"phi_{name}")] = part[col].to_numpy()
            levels.update({f"t_S_{name}_measured": c["crossing"], f"t_S_{name}_measured_se": c["crossing_se"]})
    results = {"nfe": int(sum(m["nfe"] for m in metas)), "t_S_measured": cross["crossing"],
               "t_S_measured_se": cross["crossing_se"], **levels, "t_S": spec["t_S"], "Lambda": spec["Lambda"],
               "level": PHI_CROSSING, "accuracy": metas[0]["accuracy"], "shards": len(metas),
               "nfe_rerun_per_branch": metas[0]["nfe_rerun_per_branch"]}
    cfg = {"cloning": {**metas[0]["config"]["cloning"], **cloning}, "sampler": metas[0]["sampler_settings"],
           "score": score}
    write_table(table, output["cloning"], make_metadata("cloning", cfg, seed, results))
    snaps = pq.read_table(input["snapshots"][0]).replace_schema_metadata(None)
    write_table(snaps, output["snapshots"], make_metadata("cloning", cfg, seed, {"shape": meta["shape"]}))
    log.info("cloning %s: t_S measured %.4g (theory %.4g), nfe %d over %d shards", score, results["t_S_measured"],
             spec["t_S"], results["nfe"], len(metas))


# ----------------------------------------------------------------------------- collapse
def collapse_shard(input: dict, output: dict, exp: str, score: str, collapse: dict, sampler: dict,
                   block: int, seed: int, shard: int = 0, device: str | None = None) -> None:
    """Trajectories and clone pairs of shard ``shard`` of ``collapse.shards``."""
    x, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"])
    fn = _load_score(score, x, meta, block, input.get("model"), sampler, device)
    train_set = fn if isinstance(fn, EmpiricalScore) else EmpiricalScore(x, block)
    samp = Sampler.from_config(sampler)
    shards = collapse.get("shards", 1)
    batch = collapse["pair_batch"]
    nfe0 = samp.nfe
    times, nearest, d_star, ids = track_nearest(
        fn, samp, train_set, collapse["n_trajectories"], derive_seed(seed, exp, "collapse", score),
        collapse["track_every"], batch, progress=True,
        blocks=shard_blocks(collapse["n_trajectories"], batch, shard, shards))
    t_end = float(samp.grid[-1])

    def nearest_label(xf: torch.Tensor) -> torch.Tensor:
        return train_set.nearest(xf, t_end)[0]

    branch = _branch_times(collapse["branch_times"], spec)
    res = clone_shared_trunk(fn, samp, branch, collapse["n_pairs"], x.shape[1], nearest_label,
                             derive_seed(seed, exp, "collapse-cloning", score), batch, progress=True,
                             blocks=shard_blocks(collapse["n_pairs"], batch, shard, shards))
    cfg = {"collapse": collapse, "sampler": samp.settings, "score": score, "shard": shard}
    write_table(collapse_table(times, nearest, d_star, ids), output["times"],
                make_metadata("collapse_shard", cfg, seed, {"nfe_trajectories": samp.nfe - nfe0 - res.nfe}))
    write_table(_labels_table(res), output["pairs"],
                make_metadata("collapse_shard", cfg, seed, {"nfe": res.nfe, "times": res.times.tolist(),
                                                            "sampler_settings": samp.settings}))


def collapse(input: dict, output: dict, exp: str, score: str, collapse: dict, seed: int) -> None:
    """Gather the shards: collapse times of the trajectories, and phi_C(t)."""
    table = _concat_shards(input["times"], "trajectory")
    times, trunk, clone, metas = _read_labels(list(input["pairs"]))
    phi, _ = agreement_table(times, clone == trunk[None], collapse["n_bootstrap"],
                             derive_seed(seed, exp, "bootstrap-collapse", score), level=None)
    phi_c = phi.rename(columns={"phi": "phi_c", "phi_se": "phi_c_se", "phi_lo": "phi_c_lo",
                                "phi_hi": "phi_c_hi"})
    tc = table["t_collapse"].to_numpy()
    results = {"t_C_measured": float(tc.mean()),
               "t_C_measured_se": float(tc.std(ddof=1) / math.sqrt(len(tc))) if len(tc) > 1 else float("nan"),
               "t_C_median": float(np.median(tc)), "nfe": int(sum(m["nfe"] for m in metas)),
               "d_star_mean": float(table["d_star"].mean()),
               "distinct_final_points": int(table["nearest_index"].nunique()), "shards": len(metas)}
    cfg = {"collapse": {**metas[0]["config"]["collapse"], **collapse}, "sampler": metas[0]["sampler_settings"],
           "score": score}
    write_table(table, output["times"], make_metadata("collapse", cfg, seed, results))
    write_table(phi_c, output["phi_c"], make_metadata("collapse", cfg, seed, results))
    log.info("collapse %s: mean t_collapse %.4g", score, results["t_C_measured"])


# ----------------------------------------------------------------------------- entropy / theory
def _entropy_times(entropy: dict) -> np.ndarray:
    return np.geomspace(entropy["t_min"], entropy["t_max"], entropy["n_t"])


def entropy_shard(input: dict, output: dict, exp: str, entropy: dict, block: int, seed: int, shard: int = 0,
                  progress: bool = True) -> None:
    """Time points of shard ``shard`` of ``entropy.shards`` of the Monte Carlo f(t)."""
    x, _, _ = load_subset(input["data"])
    keys = shard_blocks(entropy["n_t"], 1, shard, entropy.get("shards", 1))
    table = excess_entropy(EmpiricalScore(x, block), _entropy_times(entropy)[keys], entropy["n_samples"],
                           derive_seed(seed, exp, "entropy"), progress=progress, keys=keys)
    write_table(table, output["entropy"], make_metadata("entropy_shard", {**entropy, "shard": shard}, seed,
                                                        {"keys": keys}))


def entropy(input: dict, output: dict, exp: str, entropy: dict, seed: int) -> None:
    """Gather the shards: f(t) and t_C."""
    meta = read_metadata(input["data"])
    table = _concat_shards(input["entropy"], "t")
    n, d = meta["n"], meta["d"]
    results = {"alpha": math.log(n) / d, "t_C": entropy_collapse_time(table, d),
               "level": collapse_level(d), "n": n, "d": d, "shards": len(input["entropy"])}
    write_table(table, output["entropy"], make_metadata("entropy", entropy, seed, results))
    log.info("entropy: alpha=%.4g t_C=%.4g", results["alpha"], results["t_C"])


def theory(input: dict, output: dict, theory: dict) -> None:
    """Closed forms where they exist (the two mixtures: phi and f; Curie–Weiss: the
    population Lambda); null columns otherwise."""
    _, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"])
    t = np.linspace(theory["t_max"] / theory["n_t"], theory["t_max"], theory["n_t"])
    results = {"t_S": spec["t_S"], "Lambda": spec["Lambda"], "t_C": None, "model": meta["source"]
               if meta["source"] in ANALYTIC_SOURCES else None}
    phi = f = np.full_like(t, np.nan)
    extra = {}
    source = meta["source"]
    if source in ("gaussian_mixture", "hierarchical_mixture"):
        n, d, mu, sigma = meta["n"], meta["d"], meta["mu_tilde"], meta["sigma"]
        f = gm_excess_entropy(t, n, d, sigma)
        results.update({"t_C": gm_collapse_time(n, d, sigma), "t_C_at_level": crossing_time(t, f, collapse_level(d)),
                        "alpha": math.log(n) / d})
        if source == "gaussian_mixture":
            phi = gm_phi(t, mu * math.sqrt(d), sigma)
            lam = gm_lambda(d, mu, sigma)
        else:
            lam, lam2, _ = hierarchical_lambdas(d, mu, meta["mu_tilde2"], sigma)
            extra["phi_super"], extra["phi_sub"], phi = hierarchical_phi(t, d, mu, meta["mu_tilde2"], sigma)
            results.update({"Lambda2_population": lam2, "t_S2_population": speciation_time(lam2),
                            "t_S_super_population": speciation_time(lam)})
        results.update({"Lambda_population": lam, "t_S_population": speciation_time(lam)})
    elif source == "curie_weiss":
        lam = cw_lambda(meta["d"], meta["beta"], meta["J"], meta["h"])
        results.update({"Lambda_population": lam, "t_S_population": speciation_time(lam),
                        "beta": meta["beta"], "J": meta["J"], "h": meta["h"]})
    columns = {"t": t, "phi": phi, "f": f, **extra}
    table = pa.table({k: pa.array(v, mask=~np.isfinite(v)) if k != "t" else pa.array(v) for k, v in columns.items()})
    write_table(table, output["theory"], make_metadata("theory", theory, None, results))


def symmetry(input: dict, output: dict, exp: str, symmetry: dict, sampler: dict, seed: int) -> None:
    """Projections q = x . m / sqrt(d) of backward trajectories of the exact mixture score
    at times around t_S (the histograms beside the potential V(q, t))."""
    _, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"])
    d = meta["d"]
    samp = Sampler.from_config(sampler)
    rel = np.asarray(symmetry["times"], dtype=np.float64)
    times, q = sample_projections(_exact_model(meta), samp, symmetry["n_trajectories"],
                                  gm_direction(meta) / math.sqrt(d), rel * spec["t_S"],
                                  derive_seed(seed, exp, "symmetry"))
    K, n = q.shape
    table = pd.DataFrame({"t": np.repeat(times, n), "t_rel": np.repeat(times / spec["t_S"], n),
                          "q": q.reshape(-1)})
    results = {"t_S": spec["t_S"], "d": d, "mu_tilde": meta["mu_tilde"], "sigma": meta["sigma"],
               "bimodality": [float(np.mean(np.abs(row)) / np.std(row)) for row in q]}
    write_table(table, output["symmetry"], make_metadata("symmetry", {"symmetry": symmetry,
                                                                      "sampler": samp.settings}, seed, results))


# ----------------------------------------------------------------------------- summary / figures
def summary(input: dict, output: dict, experiments: dict) -> None:
    rows = []
    for exp, scores in experiments.items():
        spec = read_metadata(paths.SPECTRUM.format(exp=exp))
        ent = read_metadata(paths.ENTROPY.format(exp=exp))
        th = read_metadata(paths.THEORY.format(exp=exp))
        for score in scores:
            clo = read_metadata(paths.CLONING.format(exp=exp, score=score))
            t_c = (read_metadata(paths.COLLAPSE_TIMES.format(exp=exp, score=score))["t_C_measured"]
                   if score in MEMORISING_SCORES else None)
            rows.append({"experiment": exp, "score": score, "n": spec["n"], "d": spec["d"],
                         "Lambda": spec["Lambda"], "Lambda_channel0": spec["Lambda_channel0"],
                         "t_S_theory": spec["t_S"],
                         "t_S_measured": clo["t_S_measured"], "t_C_entropy": ent["t_C"],
                         "t_C_measured": t_c, "t_C_theory_gm": th["t_C"],
                         "t_S_measured_se": clo["t_S_measured_se"],
                         "classifier_accuracy": clo.get("accuracy")})
    df = pd.DataFrame(rows).astype({"n": "int64", "d": "int64", "t_C_measured": "Float64",
                                    "t_C_theory_gm": "Float64", "t_S_measured": "float64",
                                    "t_C_entropy": "float64", "t_S_measured_se": "float64",
                                    "classifier_accuracy": "Float64"})
    write_table(df, output["summary"], make_metadata("summary", {"experiments": experiments}))
    if "table" in output:  # the same table as TSV, which snakemake --report shows as a table
        with atomic_path(output["table"]) as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        log.info("summary:\n%s", df.to_string(index=False))


#: Lambda of the paper's Table 1 (Biroli et al. 2024), by dataset source and size
PAPER_LAMBDA = {("mnist", 32): 7.66, ("cifar10", 32): 16.72, ("imagenet_downsampled", 16): 3.05,
                ("imagenet_downsampled", 32): 12.11, ("lsun", 64): 60.52, ("celeba", 64): 116.72}


def table1(input: dict, output: dict, experiments: dict) -> None:
    """The paper's Table 1 for the configured experiments: n, d, Lambda (all channels and
    channel 0), t_S = 1/2 log Lambda, the paper's Lambda where it has one, and the t_S
    measured by cloning with each score model and its ratio to the theory."""
    rows = []
    for exp, scores in experiments.items():
        spec = read_metadata(paths.SPECTRUM.format(exp=exp))
        data = read_metadata(paths.DATA.format(exp=exp))
        size = data["shape"][-1] if len(data["shape"]) == 3 else None
        row = {"experiment": exp, "source": data["source"], "n": spec["n"], "d": spec["d"],
               "Lambda": spec["Lambda"], "Lambda_channel0": spec["Lambda_channel0"], "t_S": spec["t_S"],
               "Lambda_paper": PAPER_LAMBDA.get((data["source"], size))}
        for score in scores:
            measured = read_metadata(paths.CLONING.format(exp=exp, score=score))["t_S_measured"]
            row[f"t_S_measured_{score}"] = measured
            row[f"ratio_{score}"] = None if measured is None else measured / spec["t_S"]
        rows.append(row)
    df = pd.DataFrame(rows)
    write_table(df, output["table"], make_metadata("table1", {"experiments": experiments}))
    with atomic_path(output["markdown"]) as tmp:
        tmp.write_text("# Table 1: speciation time from the spectrum, and measured by cloning\n\n"
                       + df.to_markdown(index=False, floatfmt=".4g") + "\n")


def figures(input: dict, output: dict, exp: str, scores: list[str]) -> None:
    from . import plots

    plots.phi_figure(exp, scores, Path(output["phi"]))
    plots.collapse_figure(exp, [s for s in scores if s in MEMORISING_SCORES], Path(output["collapse"]))


def symmetry_figure(input: dict, output: dict, exp: str) -> None:
    from . import plots

    plots.symmetry_figure(exp, Path(output["figure"]))


def group_figures(input: dict, output: dict, group: str, members: dict) -> None:
    """Figures over the experiments of one group (a grid over d or beta)."""
    from . import plots

    plots.group_speciation_figure(group, members, Path(output["speciation"]))
    plots.group_collapse_figure(group, list(members), Path(output["collapse"]))


def samples(input: dict, output: dict, exp: str, scores: list[str]) -> None:
    from . import plots

    plots.samples_figure(exp, scores, Path(output["samples"]))
