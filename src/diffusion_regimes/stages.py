"""The workflow's stages: one function per Snakemake rule, wiring only.

Each stage takes ``input`` and ``output`` mappings (rule name -> path, or a list of
paths) and its hyperparameters as keyword arguments (the rule's ``params``), reads
only its declared inputs, calls the modules that own the concepts, and writes its
outputs atomically with metadata (:mod:`diffusion_regimes.io`). Random stages take
the experiment name ``exp`` and the master ``seed``; their generators derive from
both (:mod:`diffusion_regimes.seeding`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from . import cloning as clone_mod
from . import uturn as uturn_mod
from .classifier import labeller, save_classifier, train_classifier
from .collapse import MEMORISED_RATIO, collapse_statistics, collapse_table, track_nearest
from .data import image_shape, load_subset, make_subset
from .datamodels import for_meta
from .entropy import collapse_level, entropy_collapse_time, entropy_times, excess_entropy
from .errors import InputError
from .io import atomic_path, concat_tables, load_checkpoint, make_metadata, read_metadata, read_table, write_table
from .models import count_parameters, network_input_shape
from .networks import load_network, save_network
from .sampling import Sampler, sample_projections
from .schedule import speciation_time
from .scores import EmpiricalScore, score_model
from .seeding import Stream, derive_seed, generator, shard_blocks
from .spectrum import bulk_variance, covariance_eigenvalues, covariance_trace, spectrum_table
from .theory import PHI_AT_T_S, alpha
from .training import loss_log_frame, train_network

log = logging.getLogger("diffusion_regimes")


# ----------------------------------------------------------------------------- data
def subset(input: dict, output: dict, exp: str, dataset: dict, seed: int) -> None:
    """The training subset and the reference set of the memorisation null."""
    table, meta, ref, ref_meta = make_subset(dataset, generator(seed, exp, Stream.SUBSET),
                                             generator(seed, exp, Stream.REFERENCE))
    write_table(table, output["data"], make_metadata("subset", {"dataset": dataset}, seed, meta))
    write_table(ref, output["reference"], make_metadata("subset", {"dataset": dataset}, seed, ref_meta))
    log.info("subset: n=%d d=%d classes=%s; reference (%s) n=%d", meta["n"], meta["d"], meta["class_counts"],
             meta["reference"], ref_meta["n"])


def spectrum(input: dict, output: dict, spectrum: dict, require_t_S: bool = True) -> None:
    """Top of the covariance spectrum over all channels (the table) and Lambda over
    channel 0 only; ``spectrum.lambda_from`` says which Lambda sets t_S. With
    ``require_t_S`` (the experiment measures in units of t_S), Lambda <= 1 is refused
    here, before any network is trained: t_S = 1/2 log Lambda would be <= 0."""
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
    if require_t_S and Lambda <= 1:
        raise InputError(f"{input['data']}: the top covariance eigenvalue Lambda = {Lambda:.3g} <= 1, so "
                         f"t_S = 1/2 log Lambda <= 0 and times in units of t_S are meaningless: for images raise "
                         "dataset.size (the digits need 16); otherwise give cloning.time_unit: ou and no "
                         "collapse or symmetry times")
    trace = covariance_trace(x)
    results = {"Lambda": Lambda, "t_S": speciation_time(Lambda), "Lambda_all": lambda_all,
               "Lambda_channel0": lambda0, "t_S_channel0": speciation_time(lambda0),
               "lambda_from": spectrum["lambda_from"], "trace": trace,
               "bulk_variance": bulk_variance(lambda_all, trace, d), "n": n, "d": d,
               "source": meta["source"], "Lambda_paper": for_meta(meta).reference_lambda()}
    write_table(spectrum_table(ev[:spectrum["top"]]), output["spectrum"],
                make_metadata("spectrum", spectrum, None, results))
    log.info("spectrum: Lambda=%.4g (all channels %.4g, channel 0 %.4g) t_S=%.4g", Lambda, lambda_all,
             lambda0, results["t_S"])


# ----------------------------------------------------------------------------- models
def train(input: dict, output: dict, exp: str, arch: str, model: dict, train: dict, seed: int, state: str,
          device: str = "auto", options: dict | None = None, progress: bool = True) -> None:
    """Train the network of architecture ``arch`` (``unet`` for images, ``mlp`` for any data)
    on a subset; ``model`` is its config block; ``options`` are the train block's run options
    (from the config, not parameters: they change no result beyond rounding). With an input
    ``snapshot`` (the memorisation study's last weight snapshot, at the configured steps) the
    network is that snapshot's: trained once."""
    if "snapshot" in input:
        _network_from_snapshot(input["snapshot"], output, arch, model, train, seed)
        return
    x, _, meta = load_subset(input["data"])
    shape = _input_shape(arch, meta, input["data"])
    cfg_all = {**train, **(options or {})}
    net, loss_log, info = train_network(x, arch, model, shape, cfg_all, derive_seed(seed, exp, Stream.TRAIN),
                                        state, progress, device)
    cfg = {"model": model, "train": train}
    results = {"parameters": count_parameters(net), "final_loss": float(loss_log["loss"].tail(100).mean()),
               "steps": int(loss_log["step"].iloc[-1]), "time_scale": net.time_scale, **info}
    metadata = make_metadata("train", cfg, seed, results)
    write_table(loss_log, output["log"], metadata)
    save_network(net, arch, model, metadata, output["model"])
    rate = info["steps_per_second"]
    log.info("train: %d parameters, final loss %.4f, %s steps/s on %s (%s)", results["parameters"],
             results["final_loss"], f"{rate:.2f}" if rate else "no new", info["device"], info["precision"])


def _input_shape(arch: str, meta: dict, data: str) -> tuple[int, ...]:
    try:
        return network_input_shape(arch, tuple(meta["shape"]))
    except ValueError as err:
        raise InputError(f"{data}: {err}") from None


def _network_from_snapshot(path: str, output: dict, arch: str, model: dict, train: dict, seed: int) -> None:
    net = load_network(path, "train_snapshot")
    state = load_checkpoint(path, required=("log", "step", "metadata"))
    if int(state["step"]) != train["steps"]:
        raise InputError(f"{path}: a snapshot at step {int(state['step'])}, not the configured {train['steps']}; "
                         "delete it and re-run")
    loss_log = loss_log_frame(state["log"].numpy())
    made = state["metadata"] if isinstance(state["metadata"], dict) else {}
    results = {"parameters": count_parameters(net), "final_loss": float(loss_log["loss"].tail(100).mean()),
               "steps": int(state["step"]), "time_scale": net.time_scale, "from_snapshot": str(path),
               **{k: made.get(k) for k in ("device", "precision", "channels_last", "compile", "ema")}}
    metadata = make_metadata("train", {"model": model, "train": train}, seed, results)
    write_table(loss_log, output["log"], metadata)
    save_network(net, arch, model, metadata, output["model"])
    log.info("train: the network of the last weight snapshot %s (%d steps)", path, results["steps"])


def classifier(input: dict, output: dict, exp: str, classifier: dict, seed: int, device: str = "auto",
               progress: bool = True) -> None:
    x, labels, meta = load_subset(input["data"])
    if "reference" in input:  # the held-out images are no model's training data, but the classifier may use them
        xr, lr, _ = load_subset(input["reference"])
        x, labels = torch.cat([x, xr]), torch.cat([labels, lr])
    shape = image_shape(meta)
    net, acc, n_test = train_classifier(x, labels, shape, classifier, derive_seed(seed, exp, Stream.CLASSIFIER),
                                        progress, device)
    results = {"accuracy": acc, "n_test": n_test, "parameters": count_parameters(net), "arch": classifier["arch"]}
    save_classifier(net, classifier, shape, acc, make_metadata("classifier", classifier, seed, results),
                    output["classifier"])
    log.info("classifier %s: held-out accuracy %.4f on %d images", classifier["arch"], acc, n_test)


# ----------------------------------------------------------------------------- cloning
# Sampling stages run as shards (``{stage}_shard``: a contiguous range of blocks of
# pairs, trajectories or time points, each block with its own generator) and a
# gather stage that merges them; the merged result is identical to one job's.

def cloning_shard(input: dict, output: dict, exp: str, score: str, cloning: dict, sampler: dict,
                  block: int | None, min_accuracy: float | None, seed: int, shard: int = 0,
                  device: str | None = None, external: dict | None = None) -> None:
    """Pairs of shard ``shard`` of ``cloning.shards``: raw labels and (shard 0) the snapshots."""
    x, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"], "spectrum")
    model = for_meta(meta)
    fn = score_model(score, x, model, block, input.get("model"), sampler, device, external)
    label, accuracy = labeller(model, input.get("classifier"), min_accuracy, device)
    samp = Sampler.from_config(sampler)
    branch = clone_mod.branch_times_ou(cloning["branch_times"], spec["t_S"], cloning.get("time_unit", "t_S"))
    blocks = shard_blocks(cloning["n_pairs"], cloning["pair_batch"], shard, cloning.get("shards", 1))
    res = clone_mod.clone_shared_trunk(fn, samp, branch, cloning["n_pairs"], x.shape[1], label,
                                       derive_seed(seed, exp, Stream.CLONING, score), cloning["pair_batch"],
                                       progress=True, blocks=blocks)
    confidence = label.confidence_counts() if hasattr(label, "confidence_counts") else {}
    results = {"nfe": res.nfe, "times": res.times.tolist(), "accuracy": accuracy, "blocks": blocks, **confidence,
               "sampler_settings": samp.settings,
               "nfe_rerun_per_branch": clone_mod.rerun_per_branch_nfe(samp, branch, cloning["n_pairs"])}
    cfg = {"cloning": cloning, "sampler": samp.settings, "score": score, "shard": shard}
    write_table(clone_mod.labels_table(res), output["labels"], make_metadata("cloning_shard", cfg, seed, results))
    snaps = (clone_mod.snapshot_table(res, float(samp.grid[-1]), fn) if res.snapshots
             else clone_mod.empty_snapshots(x.shape[1]))
    write_table(snaps, output["snapshots"], make_metadata("cloning_shard", cfg, seed, {"shape": meta["shape"]}))
    log.info("cloning %s shard %d: blocks %s, nfe %d", score, shard, blocks, res.nfe)


def cloning(input: dict, output: dict, exp: str, score: str, cloning: dict, seed: int) -> None:
    """Gather the shards: phi(t) with bootstrap errors, the measured t_S, and the data
    model's extra levels of agreement (the hierarchical mixture's super-class and class
    within it)."""
    meta = read_metadata(input["data"], "subset")
    spec = read_metadata(input["spectrum"], "spectrum")
    times, trunk, clone, metas = clone_mod.read_labels(list(input["labels"]))
    table, cross = clone_mod.agreement_table(times, clone == trunk[None], cloning["n_bootstrap"],
                                             derive_seed(seed, exp, Stream.BOOTSTRAP, score))
    levels = {}
    for name, agree in for_meta(meta).agreement_levels(trunk, clone).items():
        c = clone_mod.add_agreement_columns(table, name, times, agree, cloning["n_bootstrap"],
                                            derive_seed(seed, exp, Stream.BOOTSTRAP, score, name))
        levels.update({f"t_S_{name}_measured": c["crossing"], f"t_S_{name}_measured_se": c["crossing_se"],
                       f"t_S_{name}_measured_missed": c["crossing_missed"]})
    accuracy = metas[0]["accuracy"]
    if accuracy is not None:  # classes from a classifier: phi corrected for its held-out error as well
        eps = 1.0 - accuracy
        c = clone_mod.add_agreement_columns(table, "corrected", times, clone == trunk[None], cloning["n_bootstrap"],
                                            derive_seed(seed, exp, Stream.BOOTSTRAP, score), flip=eps)
        labelled = sum(m.get("labelled", 0) for m in metas)
        # and for the label noise of the generated samples, seen at the latest branch time
        noise = clone_mod.label_noise_from_latest_branch(float(table["phi"].iloc[0]))
        _, g = clone_mod.agreement_table(times, clone == trunk[None], cloning["n_bootstrap"],
                                         derive_seed(seed, exp, Stream.BOOTSTRAP, score), flip=noise)
        levels.update({"t_S_measured_corrected": c["crossing"], "t_S_measured_corrected_se": c["crossing_se"],
                       "label_noise_generated": noise, "t_S_measured_corrected_generated": g["crossing"],
                       "t_S_measured_corrected_generated_se": g["crossing_se"],
                       "label_error": eps,
                       "confidence_mean": sum(m.get("confidence_sum", 0.0) for m in metas) / max(labelled, 1),
                       "low_confidence_fraction": sum(m.get("low_confidence", 0) for m in metas) / max(labelled, 1)})
    if cross["crossing_missed"]:
        log.warning("cloning %s: %d of %d bootstrap replicates of phi never cross %.4f; the s.e. of t_S is "
                    "over the others", score, cross["crossing_missed"], cloning["n_bootstrap"], PHI_AT_T_S)
    results = {"nfe": int(sum(m["nfe"] for m in metas)), "t_S_measured": cross["crossing"],
               "t_S_measured_se": cross["crossing_se"], "t_S_measured_missed": cross["crossing_missed"],
               **levels, "t_S": spec["t_S"], "Lambda": spec["Lambda"],
               "level": PHI_AT_T_S, "accuracy": accuracy, "shards": len(metas),
               "nfe_rerun_per_branch": metas[0]["nfe_rerun_per_branch"]}
    cfg = {"cloning": {**metas[0]["config"]["cloning"], **cloning}, "sampler": metas[0]["sampler_settings"],
           "score": score}
    write_table(table, output["cloning"], make_metadata("cloning", cfg, seed, results))
    read_metadata(input["snapshots"][0], "cloning_shard")
    snaps = pq.read_table(input["snapshots"][0]).replace_schema_metadata(None)
    write_table(snaps, output["snapshots"], make_metadata("cloning", cfg, seed, {"shape": meta["shape"]}))
    log.info("cloning %s: t_S measured %.4g (theory %.4g), nfe %d over %d shards", score, results["t_S_measured"],
             spec["t_S"], results["nfe"], len(metas))


# ----------------------------------------------------------------------------- collapse
def collapse_shard(input: dict, output: dict, exp: str, score: str, collapse: dict, sampler: dict,
                   block: int, seed: int, shard: int = 0, device: str | None = None,
                   external: dict | None = None) -> None:
    """Trajectories and clone pairs of shard ``shard`` of ``collapse.shards``: nearest
    training (and reference) points along the trajectories, memorisation of the final samples."""
    x, _, meta = load_subset(input["data"])
    x_ref, _, _ = load_subset(input["reference"])
    spec = read_metadata(input["spectrum"], "spectrum")
    fn = score_model(score, x, for_meta(meta), block, input.get("model"), sampler, device, external)
    train_set = fn if isinstance(fn, EmpiricalScore) else EmpiricalScore(x, block)
    reference = EmpiricalScore(x_ref, block) if len(x_ref) >= 2 else None
    samp = Sampler.from_config(sampler)
    shards = collapse.get("shards", 1)
    batch = collapse["pair_batch"]
    nfe0 = samp.nfe
    track = track_nearest(
        fn, samp, train_set, collapse["n_trajectories"], derive_seed(seed, exp, Stream.COLLAPSE, score),
        collapse["track_every"], batch, progress=True,
        blocks=shard_blocks(collapse["n_trajectories"], batch, shard, shards), reference=reference)
    t_end = float(samp.grid[-1])

    def nearest_label(xf):
        return train_set.nearest(xf, t_end)[0]

    branch = clone_mod.branch_times_ou(collapse["branch_times"], spec["t_S"], collapse.get("time_unit", "t_S"))
    res = clone_mod.clone_shared_trunk(fn, samp, branch, collapse["n_pairs"], x.shape[1], nearest_label,
                                       derive_seed(seed, exp, Stream.COLLAPSE_CLONING, score), batch, progress=True,
                                       blocks=shard_blocks(collapse["n_pairs"], batch, shard, shards))
    cfg = {"collapse": collapse, "sampler": samp.settings, "score": score, "shard": shard}
    write_table(collapse_table(track, train_set, reference), output["times"],
                make_metadata("collapse_shard", cfg, seed, {"nfe_trajectories": samp.nfe - nfe0 - res.nfe}))
    write_table(clone_mod.labels_table(res), output["pairs"],
                make_metadata("collapse_shard", cfg, seed, {"nfe": res.nfe, "times": res.times.tolist(),
                                                            "sampler_settings": samp.settings}))


def collapse(input: dict, output: dict, exp: str, score: str, collapse: dict, seed: int) -> None:
    """Gather the shards: collapse times of the trajectories, and phi_C(t)."""
    table = concat_tables(input["times"], "trajectory", "collapse_shard")
    times, trunk, clone, metas = clone_mod.read_labels(list(input["pairs"]))
    phi, _ = clone_mod.agreement_table(times, clone == trunk[None], collapse["n_bootstrap"],
                                       derive_seed(seed, exp, Stream.BOOTSTRAP_COLLAPSE, score), level=None)
    phi_c = phi.rename(columns={"phi": "phi_c", "phi_se": "phi_c_se", "phi_lo": "phi_c_lo",
                                "phi_hi": "phi_c_hi"})
    results = {**collapse_statistics(table, collapse["n_bootstrap"],
                                     derive_seed(seed, exp, Stream.BOOTSTRAP_MEMORISED, score)),
               "nfe": int(sum(m["nfe"] for m in metas)), "shards": len(metas)}
    cfg = {"collapse": {**metas[0]["config"]["collapse"], **collapse}, "sampler": metas[0]["sampler_settings"],
           "score": score}
    write_table(table, output["times"], make_metadata("collapse", cfg, seed, results))
    write_table(phi_c, output["phi_c"], make_metadata("collapse", cfg, seed, results))
    log.info("collapse %s: mean t_collapse %.4g", score, results["t_C_measured"])


# ----------------------------------------------------------------------------- U-turns
def uturn(input: dict, output: dict, exp: str, score: str, uturn: dict, sampler: dict, block: int | None,
          min_accuracy: float | None, seed: int, device: str | None = None, external: dict | None = None) -> None:
    """U-turns from data points (:mod:`diffusion_regimes.uturn`): phi_U(t) with bootstrap
    errors and the time where it crosses phi(t_S) of the closed form."""
    x, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"], "spectrum")
    model = for_meta(meta)
    fn = score_model(score, x, model, block, input.get("model"), sampler, device, external)
    label, accuracy = labeller(model, input.get("classifier"), min_accuracy, device)
    if uturn["start"] == "reference":
        x, _, _ = load_subset(input["reference"])
        if len(x) < 2:
            raise InputError(f"uturn.start: reference, but {exp}'s reference set is empty (dataset.holdout is 0): "
                             "start from the training points or hold some out")
    pick = uturn_mod.choose_points(len(x), uturn["n_points"], derive_seed(seed, exp, Stream.UTURN))
    samp = Sampler.from_config(sampler)
    branch = clone_mod.branch_times_ou(uturn["branch_times"], spec["t_S"], uturn["time_unit"])
    times, kept = uturn_mod.u_turn(fn, samp, x[pick], branch, label, derive_seed(seed, exp, Stream.UTURN, score),
                                   uturn["batch"], progress=True)
    boot = derive_seed(seed, exp, Stream.BOOTSTRAP_UTURN, score)
    table, cross = clone_mod.agreement_table(times, kept, uturn["n_bootstrap"], boot)
    table = table.rename(columns={"n_pairs": "n_points"})
    corrected = {}
    if accuracy is not None:  # labels from a classifier: also corrected for its held-out error
        c = clone_mod.add_agreement_columns(table, "corrected", times, kept, uturn["n_bootstrap"], boot,
                                            flip=1.0 - accuracy)
        corrected = {"t_U_measured_corrected": c["crossing"], "t_U_measured_corrected_se": c["crossing_se"]}
    results = {"t_U_measured": cross["crossing"], "t_U_measured_se": cross["crossing_se"],
               "t_U_measured_missed": cross["crossing_missed"], **corrected, "level": PHI_AT_T_S,
               "t_S": spec["t_S"], "accuracy": accuracy, "start": uturn["start"], "n_points": len(pick),
               "nfe": samp.nfe}
    cfg = {"uturn": uturn, "sampler": samp.settings, "score": score}
    write_table(table, output["uturn"], make_metadata("uturn", cfg, seed, results))
    log.info("uturn %s: phi_U crosses %.4f at t = %.4g +- %.2g (t_S = %.4g), %d points from the %s set", score,
             PHI_AT_T_S, cross["crossing"], cross["crossing_se"], spec["t_S"], len(pick), uturn["start"])


# ----------------------------------------------------------------------------- entropy / theory
def entropy_shard(input: dict, output: dict, exp: str, entropy: dict, block: int, seed: int, shard: int = 0,
                  progress: bool = True) -> None:
    """Time points of shard ``shard`` of ``entropy.shards`` of the Monte Carlo f(t)."""
    x, _, _ = load_subset(input["data"])
    keys = shard_blocks(entropy["n_t"], 1, shard, entropy.get("shards", 1))
    table = excess_entropy(EmpiricalScore(x, block), entropy_times(entropy)[keys], entropy["n_samples"],
                           derive_seed(seed, exp, Stream.ENTROPY), progress=progress, keys=keys)
    write_table(table, output["entropy"], make_metadata("entropy_shard", {**entropy, "shard": shard}, seed,
                                                        {"keys": keys}))


def entropy(input: dict, output: dict, exp: str, entropy: dict, seed: int) -> None:
    """Gather the shards: f(t) and t_C."""
    meta = read_metadata(input["data"], "subset")
    table = concat_tables(input["entropy"], "t", "entropy_shard")
    n, d = meta["n"], meta["d"]
    results = {"alpha": alpha(n, d), "t_C": entropy_collapse_time(table, d),
               "t_C_lo": entropy_collapse_time(table, d, 0.5), "t_C_hi": entropy_collapse_time(table, d, 2.0),
               "level": collapse_level(d), "n": n, "d": d, "shards": len(input["entropy"])}
    write_table(table, output["entropy"], make_metadata("entropy", entropy, seed, results))
    log.info("entropy: alpha=%.4g t_C=%.4g", results["alpha"], results["t_C"])


def theory(input: dict, output: dict, theory: dict) -> None:
    """The data model's closed forms on a grid of OU times (null columns where it has none)."""
    meta = read_metadata(input["data"], "subset")
    spec = read_metadata(input["spectrum"], "spectrum")
    model = for_meta(meta)
    t = np.linspace(theory["t_max"] / theory["n_t"], theory["t_max"], theory["n_t"])
    columns, extra = model.theory(t)
    results = {"t_S": spec["t_S"], "Lambda": spec["Lambda"], "t_C": None,
               "model": meta["source"] if model.kind == "solvable" else None, **extra}
    columns = {"t": t, **columns}
    table = pa.table({k: pa.array(v, mask=~np.isfinite(v)) if k != "t" else pa.array(v) for k, v in columns.items()})
    write_table(table, output["theory"], make_metadata("theory", theory, None, results))


def symmetry(input: dict, output: dict, exp: str, symmetry: dict, sampler: dict, seed: int) -> None:
    """Projections q = x . m / sqrt(d) of backward trajectories of the exact mixture score
    at times around t_S (the histograms beside the potential V(q, t))."""
    meta = read_metadata(input["data"], "subset")
    spec = read_metadata(input["spectrum"], "spectrum")
    model = for_meta(meta)
    samp = Sampler.from_config(sampler)
    rel = np.asarray(symmetry["times"], dtype=np.float64)
    times, q = sample_projections(model.exact_score(), samp, symmetry["n_trajectories"],
                                  model.symmetry_direction(), rel * spec["t_S"],
                                  derive_seed(seed, exp, Stream.SYMMETRY))
    K, n = q.shape
    table = pd.DataFrame({"t": np.repeat(times, n), "t_rel": np.repeat(times / spec["t_S"], n),
                          "q": q.reshape(-1)})
    results = {"t_S": spec["t_S"], "d": meta["d"], "mu_tilde": meta["mu_tilde"], "sigma": meta["sigma"],
               "bimodality": [float(np.mean(np.abs(row)) / np.std(row)) for row in q]}
    write_table(table, output["symmetry"], make_metadata("symmetry", {"symmetry": symmetry,
                                                                      "sampler": samp.settings}, seed, results))


# ----------------------------------------------------------------------------- summary / figures
def _by(keys, files, name: str) -> dict:
    """The declared input files of one kind matched to their keys (experiments, or
    (experiment, score) pairs), in the order the rule lists them."""
    files = [files] if isinstance(files, str) else list(files)
    if len(files) != len(keys):
        raise InputError(f"{len(files)} {name} inputs for {len(keys)} entries: the rule's inputs do not match "
                         "its parameters; re-run snakemake")
    return dict(zip(keys, files))


def summary(input: dict, output: dict, experiments: dict, uturn: list[str] | None = None) -> None:
    """One row per (experiment, score model), from the files the rule declares: per
    experiment (in the order of ``experiments``) its spectrum, entropy and theory; per
    (experiment, score) its cloning table and its collapse times, and its U-turns for the
    experiments listed in ``uturn``."""
    pairs = [(exp, s) for exp, scores in experiments.items() for s in scores]
    per_exp = {key: _by(experiments, input[key], key) for key in ("spectrum", "entropy", "theory")}
    clo = _by(pairs, input["cloning"], "cloning")
    col = _by(pairs, input["collapse"], "collapse")
    turns = _by([(e, s) for e in uturn or [] for s in experiments[e]], input.get("uturn", []), "uturn")
    rows = []
    for exp, score in pairs:
        spec = read_metadata(per_exp["spectrum"][exp], "spectrum")
        ent = read_metadata(per_exp["entropy"][exp], "entropy")
        th = read_metadata(per_exp["theory"][exp], "theory")
        c = read_metadata(clo[exp, score], "cloning")
        k = read_metadata(col[exp, score], "collapse")
        u = read_metadata(turns[exp, score], "uturn") if (exp, score) in turns else {}
        rows.append({"experiment": exp, "score": score, "n": spec["n"], "d": spec["d"],
                     "Lambda": spec["Lambda"], "Lambda_channel0": spec["Lambda_channel0"],
                     "t_S_theory": spec["t_S"],
                     "t_S_measured": c["t_S_measured"], "t_C_entropy": ent["t_C"],
                     "t_C_measured": k["t_C_measured"], "t_C_theory_gm": th["t_C"],
                     "t_S_measured_se": c["t_S_measured_se"],
                     "classifier_accuracy": c.get("accuracy"),
                     "t_S_measured_missed": c.get("t_S_measured_missed"),
                     "source": spec.get("source"), "Lambda_paper": spec.get("Lambda_paper"),
                     "t_S_measured_corrected": c.get("t_S_measured_corrected"),
                     "t_S_measured_corrected_se": c.get("t_S_measured_corrected_se"),
                     "t_S_measured_corrected_generated": c.get("t_S_measured_corrected_generated"),
                     "memorised_fraction": k["memorised_fraction"],
                     "memorised_fraction_se": k["memorised_fraction_se"],
                     "memorised_fraction_null": k["memorised_fraction_null"],
                     "t_C_memorised": k["t_C_memorised"], "t_C_null": k["t_C_null"],
                     "t_C_entropy_lo": ent.get("t_C_lo"), "t_C_entropy_hi": ent.get("t_C_hi"),
                     "t_C_theory_gm_finite_d": th.get("t_C_finite_d"),
                     "t_U_measured": u.get("t_U_measured"), "t_U_measured_se": u.get("t_U_measured_se")})
    floats = ["t_C_measured", "t_C_theory_gm", "t_S_measured", "t_C_entropy", "t_S_measured_se",
              "classifier_accuracy", "Lambda_paper", "t_S_measured_corrected", "t_S_measured_corrected_se",
              "t_S_measured_corrected_generated", "memorised_fraction", "memorised_fraction_se",
              "memorised_fraction_null", "t_C_memorised", "t_C_null", "t_C_entropy_lo", "t_C_entropy_hi",
              "t_C_theory_gm_finite_d", "t_U_measured", "t_U_measured_se"]
    df = pd.DataFrame(rows).astype({"n": "int64", "d": "int64", "t_S_measured_missed": "Int64",
                                    **dict.fromkeys(floats, "Float64")})
    write_table(df, output["summary"], make_metadata("summary", {"experiments": experiments}))
    if "table" in output:  # the same table as TSV, which snakemake --report shows as a table
        with atomic_path(output["table"]) as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        log.info("summary:\n%s", df.to_string(index=False))


def table1(input: dict, output: dict) -> None:
    """The paper's Table 1 for the experiments of the summary: n, d, Lambda (all channels
    and channel 0), t_S = 1/2 log Lambda, the paper's Lambda where it has one, and the t_S
    measured by cloning with each score model and its ratio to the theory."""
    summ, _ = read_table(input["summary"], stage="summary")
    rows = []
    for exp, part in summ.groupby("experiment", sort=False):
        first = part.iloc[0]
        lam_paper = first["Lambda_paper"]
        row = {"experiment": exp, "source": first["source"], "n": int(first["n"]), "d": int(first["d"]),
               "Lambda": first["Lambda"], "Lambda_channel0": first["Lambda_channel0"], "t_S": first["t_S_theory"],
               "Lambda_paper": None if pd.isna(lam_paper) else float(lam_paper)}
        for _, r in part.iterrows():
            measured = None if pd.isna(r["t_S_measured"]) else float(r["t_S_measured"])
            row[f"t_S_measured_{r['score']}"] = measured
            row[f"ratio_{r['score']}"] = None if measured is None else measured / first["t_S_theory"]
        rows.append(row)
    df = pd.DataFrame(rows)
    write_table(df, output["table"], make_metadata("table1", {"experiments": list(summ["experiment"].unique())}))
    with atomic_path(output["markdown"]) as tmp:
        tmp.write_text("# Table 1: speciation time from the spectrum, and measured by cloning\n\n"
                       + df.to_markdown(index=False, floatfmt=".4g") + "\n")


def figures(input: dict, output: dict, exp: str, scores: list[str]) -> None:
    from . import plots

    turns = input.get("uturn") or []
    plots.phi_figure(exp, input["spectrum"], input["theory"], _by(scores, input["cloning"], "cloning"),
                     Path(output["phi"]), _by(scores, turns, "uturn") if len(turns) else None)
    plots.collapse_figure(exp, input["entropy"], input["theory"], _by(scores, input["collapse"], "collapse"),
                          _by(scores, input["phi_c"], "phi_c"), Path(output["collapse"]))


def symmetry_figure(input: dict, output: dict, exp: str) -> None:
    from . import plots

    plots.symmetry_figure(exp, input["symmetry"], Path(output["figure"]))


def group_figures(input: dict, output: dict, group: str, members: dict) -> None:
    """Figures over the experiments of one group (a grid over d, n or beta): ``input`` holds,
    per member in the order of ``members``, its data, spectrum, theory, entropy and the
    cloning table of its first score model."""
    from . import plots

    per_key = {key: _by(members, input[key], key) for key in ("data", "spectrum", "theory", "entropy", "cloning")}
    files = {exp: {key: per_key[key][exp] for key in per_key} for exp in members}
    plots.group_speciation_figure(group, files, {exp: scores[0] for exp, scores in members.items()},
                                  Path(output["speciation"]))
    plots.group_collapse_figure(group, files, Path(output["collapse"]))


def samples(input: dict, output: dict, exp: str, scores: list[str]) -> None:
    from . import plots

    plots.samples_figure(exp, input["data"], _by(scores, input["snapshots"], "snapshots"), Path(output["samples"]))



# ----------------------------------------------------------------------------- memorisation vs training time
# The memorisation study (:mod:`diffusion_regimes.memorisation`): a chain of training jobs,
# one per weight snapshot, each continuing the previous one; one measurement job per
# snapshot; a gather per experiment (the curves, tau_mem, tau_gen) and per group of n
# (tau against n, gamma, collapse against the entropy).

def train_snapshot(input: dict, output: dict, exp: str, arch: str, model: dict, train: dict, step: int, seed: int,
                   state: str, device: str = "auto", options: dict | None = None, progress: bool = True) -> None:
    """Train to ``step`` from the previous weight snapshot (input ``previous``; from scratch
    for the first) and write the snapshot: the network (EMA weights when ``ema`` is set) as
    :func:`diffusion_regimes.networks.load_network` reads it, beside the full training state
    that the next snapshot continues from. ``train`` is the train block without ``steps``."""
    x, _, meta = load_subset(input["data"])
    shape = _input_shape(arch, meta, input["data"])
    cfg_all = {**train, **(options or {}), "steps": int(step)}
    net, loss_log, info = train_network(x, arch, model, shape, cfg_all, derive_seed(seed, exp, Stream.TRAIN),
                                        state, progress, device, start=input.get("previous"))
    full = load_checkpoint(state, required=("model", "optimizer", "step", "generator", "log"))
    results = {"parameters": count_parameters(net), "step": int(step), "time_scale": net.time_scale,
               "final_loss": float(loss_log["loss"].tail(100).mean()) if len(loss_log) else float("nan"), **info}
    metadata = make_metadata("train_snapshot", {"model": model, "train": train, "step": int(step)}, seed, results)
    save_network(net, arch, model, metadata, output["snapshot"], extra=full)
    Path(state).unlink(missing_ok=True)
    log.info("snapshot %s at step %d: loss %.4f", arch, step, results["final_loss"])


def _quality_features(meta: dict, classifier_path: str | None, device: str | None):
    """The feature map of the quality distance: the classifier's penultimate features for
    images, the coordinates themselves for vectors."""
    if classifier_path is None:
        return lambda v: v
    from .classifier import classifier_features, load_classifier

    net, shape, _ = load_classifier(classifier_path)
    return lambda v: classifier_features(net, shape, v, device=device or "auto")


def _rows(x: torch.Tensor, most: int, seed: int) -> torch.Tensor:
    """At most ``most`` rows of x, a fixed random choice when there are more."""
    if len(x) <= most:
        return x
    return x[torch.randperm(len(x), generator=generator(seed))[:most]]


def memorisation_snapshot(input: dict, output: dict, exp: str, score: str, memorisation: dict, sampler: dict,
                          block: int, seed: int, step: int, device: str | None = None) -> None:
    """One weight snapshot measured: generated samples tracked against the training and the
    reference points (memorisation, collapse times; the same prior noise at every snapshot),
    the quality distance of the samples to the reference set, and the denoising loss on
    training and held-out points per noise level. One row per sample (the collapse table's
    columns, and ``sample``, the denoised sample, for the first ``n_show``)."""
    from .memorisation import denoising_loss, kernel_distance

    x, _, meta = load_subset(input["data"])
    ref, _, _ = load_subset(input["reference"])
    if len(ref) < 2:
        raise InputError(f"{input['reference']}: the memorisation study needs held-out points (for images "
                         "dataset.holdout > 0)")
    fn = score_model(score, x, for_meta(meta), block, input["snapshot"], sampler, device)
    net = fn.model  # the snapshot's EpsilonModel, for its denoising loss
    train_set, reference = EmpiricalScore(x, block), EmpiricalScore(ref, block)
    samp = Sampler.from_config(sampler)
    track = track_nearest(fn, samp, train_set, memorisation["n_samples"],
                          derive_seed(seed, exp, Stream.MEMORISATION, score), memorisation["track_every"],
                          memorisation["batch"], progress=True, reference=reference)
    table = collapse_table(track, train_set, reference)
    feats = _quality_features(meta, input.get("classifier"), device)
    quality, quality_se, width = kernel_distance(feats(track.x0), feats(ref), memorisation["quality_blocks"],
                                                 derive_seed(seed, exp, Stream.QUALITY))
    levels = [float(t) for t in memorisation["loss_times"]]
    points = memorisation["loss_points"]
    losses = {}
    for name, pts in (("train", x), ("heldout", ref)):
        sub = _rows(pts, points, derive_seed(seed, exp, Stream.DENOISING_LOSS, name))
        mean, se = denoising_loss(net, sub, levels, points, derive_seed(seed, exp, Stream.DENOISING_LOSS, name),
                                  sampler.get("batch_size", 512), fn.device)
        losses.update({f"loss_{name}": mean.tolist(), f"loss_{name}_se": se.tolist()})
    show = min(memorisation["n_show"], len(table))
    samples = [track.x0[i].tolist() for i in range(show)] + [None] * (len(table) - show)
    out = pa.Table.from_pandas(table, preserve_index=False).append_column(
        "sample", pa.array(samples, type=pa.list_(pa.float32())))
    results = {"step": int(step), "quality": quality, "quality_se": quality_se, "kernel_width": width,
               "loss_times": levels, **losses, "nfe": samp.nfe, "n_samples": len(table), "shape": meta["shape"],
               "quality_features": "classifier penultimate" if input.get("classifier") else "coordinates"}
    cfg = {"memorisation": memorisation, "sampler": samp.settings, "score": score, "step": int(step)}
    write_table(out, output["measure"], make_metadata("memorisation_snapshot", cfg, seed, results))
    log.info("snapshot %d: memorised %.3f, quality %.4g +- %.2g, held-out - train loss %.4g", step,
             float(table["memorised"].mean()), quality, quality_se,
             float(np.mean(losses["loss_heldout"]) - np.mean(losses["loss_train"])))


def memorisation(input: dict, output: dict, exp: str, score: str, memorisation: dict, steps: list[int],
                 seed: int, device: str | None = None) -> None:
    """Gather the snapshots of one experiment: per step the memorised fraction (bootstrap
    s.e., and against the reference set), the collapse time of memorised trajectories, the
    quality distance and the denoising losses (``curve``; per level in ``loss``); tau_mem
    with its bootstrap interval, replicates and censoring, tau_gen (quality) and tau_gen_loss (held-out
    loss) in the metadata, with the quality of the training set itself (the score of
    samples that copy it) as control."""
    from .memorisation import kernel_distance, tau_gen, tau_mem

    files = _by(steps, input["snapshots"], "snapshot measurement")
    n_boot = memorisation["n_bootstrap"]
    rows, flags, loss_rows = [], [], []
    for step in steps:
        table, meta = read_table(files[step], stage="memorisation_snapshot")
        st = collapse_statistics(table, n_boot, derive_seed(seed, exp, Stream.BOOTSTRAP_MEMORISED, score, step))
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
    tm = tau_mem(steps, flags, memorisation["threshold"], n_boot, derive_seed(seed, exp, Stream.BOOTSTRAP_TAU, score))
    x, _, data_meta = load_subset(input["data"])
    ref, _, _ = load_subset(input["reference"])
    feats = _quality_features(data_meta, input.get("classifier"), device)
    control, control_se, _ = kernel_distance(feats(_rows(x, len(ref), derive_seed(seed, exp, Stream.QUALITY))),
                                             feats(ref), memorisation["quality_blocks"],
                                             derive_seed(seed, exp, Stream.QUALITY))
    heldout = curve["loss_heldout"].to_numpy(dtype=np.float64)
    tau_gen_loss = float(steps[int(np.nanargmin(heldout))]) if np.isfinite(heldout).any() else float("nan")
    results = {"n": int(data_meta["n"]), "threshold": memorisation["threshold"],
               "tau_mem": tm["tau_mem"], "tau_mem_lo": tm["tau_mem_lo"], "tau_mem_hi": tm["tau_mem_hi"],
               "tau_mem_censored": tm["censored"],
               "tau_mem_never_passed": tm["never_passed"], "tau_mem_replicates": tm["replicates"].tolist(),
               "tau_gen": tau_gen(steps, curve["quality"], curve["quality_se"]),
               "tau_gen_loss": tau_gen_loss, "quality_training_set": control,
               "quality_training_set_se": control_se, "steps": list(steps),
               "criterion": f"memorised: d1/d2 < {MEMORISED_RATIO:.4g}; tau_mem: memorised fraction > threshold, "
                            "interpolated in log(step); tau_gen: first snapshot within 2 s.e. of the best quality",
               "quality_measure": "unbiased MMD^2, Gaussian kernel of width the median reference distance"}
    cfg = {"memorisation": memorisation, "score": score}
    meta_out = make_metadata("memorisation", cfg, seed, results)
    write_table(curve, output["curve"], meta_out)
    write_table(pd.DataFrame(loss_rows), output["loss"], make_metadata("memorisation", cfg, seed, {"n": results["n"]}))
    log.info("memorisation %s: tau_mem %.4g [%.4g, %.4g], tau_gen %.4g (quality), %.4g (held-out loss)", exp,
             results["tau_mem"], results["tau_mem_lo"], results["tau_mem_hi"], results["tau_gen"],
             results["tau_gen_loss"])


def memorisation_group(input: dict, output: dict, group: str, members: list[str]) -> None:
    """One table per group of n: per member ``n, tau_mem, tau_mem_lo, tau_mem_hi, tau_gen``
    (training steps), ``tau_gen_loss``, and at the last snapshot the memorised fraction and
    the collapse time of memorised trajectories beside the entropy's t_C (and its band) and
    the mixture's closed forms, and ``tau_mem_censored`` (``left``: the first snapshot already
    passes; ``right``: none does); the fit tau_mem = A n^gamma with gamma's bootstrap interval
    in the metadata. Then the group's figures."""
    from . import plots
    from .memorisation import bootstrap_interval, fit_power_law

    per = {key: _by(members, input[key], key) for key in ("curve", "entropy", "theory", "last", "data")}
    rows, reps = [], []
    for exp in members:
        curve, meta = read_table(per["curve"][exp], stage="memorisation")
        ent = read_metadata(per["entropy"][exp], "entropy")
        th = read_metadata(per["theory"][exp], "theory")
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
    table = pd.DataFrame(rows).astype({c: "float64" for c in ("tau_mem", "tau_mem_lo", "tau_mem_hi", "tau_gen",
                                                               "tau_gen_loss", "t_C_memorised_last",
                                                               "t_C_memorised_last_se", "t_C_null_last",
                                                               "t_C_entropy", "t_C_entropy_lo", "t_C_entropy_hi",
                                                               "t_C_theory_gm", "t_C_theory_gm_finite_d")})
    order = np.argsort(table["n"].to_numpy(), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    fit = fit_power_law(table["n"], table["tau_mem"], [reps[i] for i in order],
                        use=table["tau_mem_censored"].to_numpy() != "left")
    results = {**fit, "members": list(table["experiment"]),
               "fit": "least squares of log tau_mem on log n, left-censored points (the first snapshot already "
                      "past the threshold) left out; 95 % interval: percentiles of the slope refitted on the "
                      "bootstrap replicates in which every fitted n passes"}
    write_table(table, output["table"], make_metadata("memorisation_group", {"group": group}, None, results))
    plots.memorised_fraction_figure(group, per["curve"], Path(output["fraction"]))
    plots.tau_figure(group, table, fit, Path(output["tau"]))
    ends = [table["experiment"].iloc[0], table["experiment"].iloc[-1]]
    plots.nearest_figure(group, {e: (per["last"][e], per["data"][e]) for e in dict.fromkeys(ends)},
                         Path(output["nearest"]))
    plots.collapse_entropy_figure(group, table, Path(output["collapse"]))
    log.info("memorisation %s: tau_mem ~ n^%.3g [%.3g, %.3g]", group, fit["gamma"], fit["gamma_lo"], fit["gamma_hi"])


def memorisation_figure(input: dict, output: dict, exp: str) -> None:
    from . import plots

    plots.memorisation_figure(exp, input["curve"], input["loss"], Path(output["figure"]))
