"""Bad input through the command line, as a careful user or an attacker would feed it.

Every case asserts: a non-zero exit, exactly one ``diffusion-regimes:`` line on stderr
that names the file or key, no traceback, nothing executed by a data file, and no file
under ``results/`` changed except the failing job's outputs. Cases: config errors
(through ``snakemake`` and through ``diffusion-regimes check-config``), corrupt or foreign
Parquet tables, checkpoints and resume states (garbage, pickle payloads, malformed
records), image files (gzip, pickles), data without a speciation regime, a kill
during a write, and an unexpected failure inside a stage.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from workflow_api import QUICK_ENV, ROOT, TINY

EXE = Path(sys.executable).parent
SNAKEMAKE = str(EXE / "snakemake")
CLI = str(EXE / "diffusion-regimes")
#: pickle payloads write this file when they run
MARK = "payload-ran"


class Payload:
    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def payload(mark: Path, wrap=lambda p: {"x": p}) -> bytes:
    return pickle.dumps(wrap(Payload(mark)))


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=QUICK_ENV)


def snakemake(work: Path, *targets: str, configfile: Path = TINY, extra: tuple = ()) -> subprocess.CompletedProcess:
    return run([SNAKEMAKE, *targets, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", "2",
                "--configfile", str(configfile), *extra], work.parent)


def snapshot(work: Path) -> dict[str, str]:
    out = {}
    results = work / "results"
    if results.exists():
        for p in results.rglob("*"):
            if p.is_file():
                out[p.relative_to(work).as_posix()] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def assert_one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero exit, exactly one diffusion-regimes line holding ``words``, no traceback."""
    return assert_one_line_each(proc, {"the case": list(words)})["the case"]


def assert_one_line_each(proc: subprocess.CompletedProcess, cases: dict[str, list[str]]) -> dict[str, str]:
    """Non-zero exit, one diffusion-regimes line per case (jobs run with --keep-going), each
    holding its case's words and no other case's, no traceback; returns case -> line."""
    text = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("diffusion-regimes:")]
    assert proc.returncode != 0, text[-3000:]
    assert len(lines) == len(cases), text[-3000:]
    found = {}
    for case, words in cases.items():
        hits = [ln for ln in lines if all(w in ln for w in words)]
        assert len(hits) == 1, (case, words, lines)
        found[case] = hits[0]
    assert "Traceback" not in text, text[-3000:]
    assert "weights_only" not in text and "lost sys.stderr" not in text and "Exception ignored" not in text
    return found


def assert_only_changed(before: dict, after: dict, allowed: set[str]) -> None:
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= allowed, sorted(changed - allowed)
    assert not [k for k in after if k.endswith(".tmp")], "a temporary file was left behind"


# ----------------------------------------------------------------------------- configs
def _tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


CONFIG_CASES = {  # name: (edit of the tiny config, words of the one line)
    "unknown key": (lambda c: c["experiments"]["gmm"]["cloning"].update(n_pair=3),
                    ["experiments.gmm.cloning", "unknown key 'n_pair'"]),
    "wrong type": (lambda c: c["experiments"]["gmm"]["cloning"].update(n_pairs="many"),
                   ["experiments.gmm.cloning.n_pairs", "'many' is not of type 'integer'"]),
    "integer as float": (lambda c: c["experiments"]["gmm"]["dataset"].update(n=200.0),
                         ["experiments.gmm.dataset.n", "an integer >= 2, or a list"]),
    "d too small": (lambda c: c["experiments"]["gmm"]["dataset"].update(d=1),
                    ["experiments.gmm.dataset.d", "1 is not an integer >= 2, or a list"]),
    "d list": (lambda c: c["experiments"]["gmm"]["dataset"].update(d=[1, 16]),
               ["experiments.gmm.dataset.d", "[1, 16] is not an integer >= 2, or a list"]),
    "n list": (lambda c: c["experiments"]["gmm"]["dataset"].update(n=[100, "x"]),
               ["experiments.gmm.dataset.n", "is not an integer >= 2, or a list"]),
    "odd d": (lambda c: c["experiments"].update(h={"dataset": {"source": "hierarchical_mixture", "d": 33, "n": 40},
                                                   "scores": ["exact"]}),
              ["experiments.h.dataset.d", "is not an even integer >= 2"]),
    "unknown source": (lambda c: c["experiments"]["gmm"]["dataset"].update(source="gmm"),
                       ["experiments.gmm.dataset.source", "'gmm' is not one of"]),
    "OU branch time beyond T": (lambda c: c["experiments"]["gmm"].update(
        cloning={"time_unit": "ou", "branch_times": [1.0, 7.0]}),
        ["experiments.gmm.cloning.branch_times", "OU time 7.0 is outside the sampler's grid", "sampler.T"]),
    "more shards than blocks": (lambda c: c["experiments"]["gmm"]["cloning"].update(shards=3),
                                ["experiments.gmm.cloning.shards", "only 1 blocks"]),
    "unimportable plugin": (lambda c: c.update(plugins=["no_such_module_here"]),
                            ["plugins", "no_such_module_here"]),
    "exact score of images": (lambda c: c["experiments"]["digits"].update(scores=["exact"]),
                              ["experiments.digits.scores", "'exact' needs a solvable data model"]),
    "external without a kind": (lambda c: c["experiments"]["digits"].update(scores=["external"]),
                                ["experiments.digits.external.kind", "diffusers, edm or python"]),
    "external folder missing": (lambda c: c["experiments"]["digits"].update(
        scores=["external"], external={"kind": "diffusers", "path": "no/such/model"}),
        ["experiments.digits.external.path", "no/such/model is not a folder", "nothing is downloaded"]),
    "external folder without a scheduler": (lambda c: c["experiments"]["digits"].update(
        scores=["external"], external={"kind": "diffusers", "path": "."}),
        ["experiments.digits.external.path", "no scheduler_config.json", "scheduler.save_pretrained"]),
    "U-turns from an empty reference": (lambda c: c["experiments"]["digits"].update(
        uturn={"enabled": True, "start": "reference"}, dataset={**c["experiments"]["digits"]["dataset"], "holdout": 0}),
        ["experiments.digits.uturn.start", "dataset.holdout is 0"]),
    "memorisation over a grid of d": (lambda c: c["experiments"]["cw"].update(memorisation={"enabled": True}),
                                      ["experiments.cw.dataset.d", "only n (per_class for images) a list"]),
    "memorisation snapshots past the training": (lambda c: c["experiments"]["digits"].update(
        memorisation={"enabled": True, "score": "unet", "first_step": 100}),
        ["experiments.digits.memorisation.first_step", "past train.steps = 20"]),
    "branch times on one sampler step": (lambda c: c["experiments"]["gmm"].update(
        sampler={"steps": 10, "T": 5.0}, cloning={"time_unit": "ou", "branch_times": [0.5, 0.55, 1.0]}),
        ["experiments.gmm.cloning.branch_times", "0.5 and 0.55 fall on the same step of the sampler's grid",
         "raise the sampler's steps"]),
    "memorisation U-Net of vectors": (lambda c: c["experiments"]["gmm"].update(
        memorisation={"enabled": True, "score": "unet"}),
        ["experiments.gmm.memorisation.score", "'unet' needs image data"]),
}


#: the cases also run through snakemake itself (the Snakefile's validation gives the same line)
THROUGH_SNAKEMAKE = {"unknown key", "d list", "OU branch time beyond T", "unimportable plugin",
                     "external folder missing", "external folder without a scheduler",
                     "branch times on one sampler step"}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(case, tmp_path, capsys):
    edit, words = CONFIG_CASES[case]
    cfg = _tiny()
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if case in THROUGH_SNAKEMAKE:  # the command line itself
        proc = run([CLI, "check-config", str(path)], tmp_path)
    else:  # the same entry point in this process (a command line costs seconds of imports)
        from diffusion_regimes.cli import main

        code = main(["check-config", str(path)])
        out = capsys.readouterr()
        proc = subprocess.CompletedProcess([CLI, "check-config"], code, out.out, out.err)
    line = assert_one_line(proc, *words)
    if case in THROUGH_SNAKEMAKE:
        work = tmp_path / "work"
        work.mkdir()
        assert assert_one_line(snakemake(work, configfile=path, extra=("-n",)), *words) == line
        assert not (work / "results").exists()


@pytest.mark.slow
def test_config_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("seed: 0\nexperiments:\n  gmm: {dataset: {source: gaussian_mixture\n  other: [1, 2\n")
    for cmd in ([CLI, "check-config", str(bad)], [CLI, "run", "-n", "--configfile", str(bad)]):
        assert_one_line(run(cmd, ROOT), "broken.yaml", "line 4", "not valid YAML")
    for cmd in ([CLI, "check-config", str(tmp_path / "missing.yaml")],
                [CLI, "run", "-n", "--configfile", str(tmp_path / "missing.yaml")]):
        assert_one_line(run(cmd, ROOT), "missing.yaml", "No such file")
    good = run([CLI, "run", "-n", "--configfile", str(TINY), "-d", str(tmp_path / "w")], ROOT)
    assert good.returncode == 0, good.stderr[-2000:]


@pytest.mark.slow
def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(TINY.read_bytes().replace(b"# A tiny config", b"# Une configuration \xe9l\xe9mentaire"))
    for cmd in ([CLI, "check-config", str(bad)], [CLI, "run", "-n", "--configfile", str(bad)]):
        assert_one_line(run(cmd, ROOT), "latin1.yaml", "line 1 is not UTF-8 text (byte 0xe9)", "save the file as UTF-8")


@pytest.mark.slow
def test_a_nested_config_override_is_typed_as_in_a_file(tmp_path):
    """``--config 'experiments={gmm: {cloning: {n_pairs: 48}}}'`` (config/README.md): Snakemake hands the
    nested 48 over as a string; the workflow types it as a YAML file would and merges it."""
    work = tmp_path / "w"
    target = "results/gmm/exact/shards/cloning_0.parquet"
    proc = snakemake(work, target, extra=("-n", "--config", "experiments={gmm: {cloning: {n_pairs: 48}}}"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (work / "results").exists()
    bad = snakemake(work, target, extra=("-n", "--config", "experiments={gmm: {cloning: {n_pairs: many}}}"))
    assert_one_line(bad, "experiments.gmm.cloning.n_pairs", "'many' is not of type 'integer'")


JOB_TIME_CASES = {  # name: (experiment, target, words)
    "n x d beyond the memory": (
        {"dataset": {"source": "gaussian_mixture", "d": 100_000, "n": 10_000_000}, "scores": ["exact"]},
        "results/x/data.parquet", ["dataset n = 10000000 (+ its reference) x d = 100000", "needs about 24.0 TB",
                                   "reduce dataset.n"]),
    "a class without points": (  # the files hold only label 1 (class 0)
        {"dataset": {"source": "imagenet_downsampled", "classes": [0, 1], "size": 8, "data_root": "DATA"},
         "scores": ["empirical"]},
        "results/x/data.parquet", ["class 1 has no point in the training split", "check dataset.classes"]),
    "an empty held-out set": (
        {"dataset": {"source": "sklearn_digits", "classes": [1, 8], "per_class": 1, "holdout": 0.4, "size": 16},
         "scores": ["empirical"]},
        "results/x/data.parquet", ["dataset.holdout 0.4 holds out [0, 0] points per class", "holdout: 0"]),
    "a U-Net beyond the memory": (
        {"dataset": {"source": "sklearn_digits", "classes": [1, 8], "size": 16}, "scores": ["unet"],
         "model": {"channels": 4096, "channel_mult": [1, 2, 4, 8]}, "train": {"steps": 10}},
        "results/x/models/unet.pt", ["the unet network (", "parameters", "more than the", "model.channels"]),
    "U-Net sides not divisible (size null)": (
        {"dataset": {"source": "lfw_subset", "classes": ["face", "non-face"]}, "scores": ["unet"],
         "model": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1}, "train": {"steps": 10}},
        "results/x/models/unet.pt", ["needs image sides divisible by 2; the data are 25x25", "dataset.size"]),
}


@pytest.mark.slow
def test_config_semantics_found_by_the_job_are_one_line_each(tmp_path):
    """Family 6: what only the job can know (the machine's memory, the classes and the sides the
    data have) is refused with one line before anything large is allocated; outputs before it
    stay. One experiment per case, one run (--keep-going)."""
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data/train_data_batch_1.npz", data=np.zeros((6, 3 * 8 * 8), np.uint8), labels=[1] * 6)
    names = {case: f"x{k}" for k, case in enumerate(JOB_TIME_CASES)}
    experiments = {names[case]: exp for case, (exp, _, _) in JOB_TIME_CASES.items()}
    text = yaml.safe_dump({"experiments": experiments}).replace("DATA", str(tmp_path / "data"))
    (tmp_path / "c.yaml").write_text(text)
    work = tmp_path / "work"
    targets = [target.replace("/x/", f"/{names[case]}/") for case, (_, target, _) in JOB_TIME_CASES.items()]
    proc = snakemake(work, *targets, configfile=tmp_path / "c.yaml", extra=("--keep-going",))
    assert_one_line_each(proc, {case: words for case, (_, _, words) in JOB_TIME_CASES.items()})
    assert not [t for t in targets if (work / t).exists()]


# ----------------------------------------------------------------------------- files of a run
def _write_parquet(path: Path, meta: bytes | None) -> None:
    table = pa.table({"t": [0.1, 0.2]})
    pq.write_table(table.replace_schema_metadata({b"diffusion_regimes": meta} if meta is not None else None), path)


def _garbage(path: Path, mark: Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 10)


FILE_CASES = {
    # name: (file to spoil, how, target, words, outputs of the failing job)
    "corrupt data table": ("results/gmm/data.parquet", _garbage, "results/gmm/spectrum.parquet",
                           ["gmm/data.parquet", "not a readable Parquet file"], {"results/gmm/spectrum.parquet"}),
    "metadata not JSON": ("results/gmm/spectrum.parquet", lambda p, m: _write_parquet(p, b"{not json"),
                          "results/gmm/theory.parquet", ["gmm/spectrum.parquet", "not valid JSON"],
                          {"results/gmm/theory.parquet"}),
    "no metadata": ("results/gmm/spectrum.parquet", lambda p, m: _write_parquet(p, None),
                    "results/gmm/theory.parquet", ["gmm/spectrum.parquet", "no 'diffusion_regimes' metadata"],
                    {"results/gmm/theory.parquet"}),
    "another stage's table": ("results/gmm/spectrum.parquet",
                              lambda p, m: shutil.copy(p.parent / "entropy.parquet", p),
                              "results/gmm/theory.parquet", ["gmm/spectrum.parquet", "written by the entropy stage"],
                              {"results/gmm/theory.parquet"}),
    "checkpoint of garbage": ("results/digits/models/unet.pt", _garbage,
                              "results/digits/unet/shards/cloning_0.parquet",
                              ["digits/models/unet.pt", "not a checkpoint"],
                              {"results/digits/unet/shards/cloning_0.parquet",
                               "results/digits/unet/shards/snapshots_0.parquet"}),
    "checkpoint with a pickle payload": ("results/digits/models/unet.pt",
                                         lambda p, m: p.write_bytes(payload(m)),
                                         "results/digits/unet/shards/collapse_0.parquet",
                                         ["digits/models/unet.pt", "unsafe"],
                                         {"results/digits/unet/shards/collapse_0.parquet",
                                          "results/digits/unet/shards/collapse_pairs_0.parquet",
                                          "results/digits/unet/sanity.parquet"}),
    "checkpoint with a torch.save payload": (
        "results/digits/models/unet.pt", lambda p, m: torch.save({"state_dict": Payload(m), "network": {}}, p),
        "results/digits/unet/shards/collapse_0.parquet", ["digits/models/unet.pt", "unsafe"],
        {"results/digits/unet/shards/collapse_0.parquet", "results/digits/unet/shards/collapse_pairs_0.parquet",
         "results/digits/unet/sanity.parquet"}),
    "malformed network record": (
        "results/digits/models/unet.pt",
        lambda p, m: torch.save({**torch.load(p, weights_only=True), "network": {"arch": "unet", "shape": "abc"}}, p),
        "results/digits/unet/shards/collapse_0.parquet", ["digits/models/unet.pt", "malformed network record"],
        {"results/digits/unet/shards/collapse_0.parquet", "results/digits/unet/shards/collapse_pairs_0.parquet",
         "results/digits/unet/sanity.parquet"}),
    "weights that are not tensors": (
        "results/digits/models/unet.pt",
        lambda p, m: torch.save({**torch.load(p, weights_only=True), "state_dict": {"w": [1, 2]}}, p),
        "results/digits/unet/shards/collapse_0.parquet", ["digits/models/unet.pt", "state_dict"],
        {"results/digits/unet/shards/collapse_0.parquet", "results/digits/unet/shards/collapse_pairs_0.parquet",
         "results/digits/unet/sanity.parquet"}),
    "classifier with a malformed config": (
        "results/digits/classifier.pt",
        lambda p, m: torch.save({**torch.load(p, weights_only=True), "config": {"arch": 3}, "shape": [1, "x"]}, p),
        "results/digits/empirical/shards/cloning_0.parquet", ["digits/classifier.pt", "malformed classifier"],
        {"results/digits/empirical/shards/cloning_0.parquet", "results/digits/empirical/shards/snapshots_0.parquet"}),
    "classifier with a pickle payload": (
        "results/digits/classifier.pt", lambda p, m: p.write_bytes(payload(m)),
        "results/digits/empirical/shards/cloning_0.parquet", ["digits/classifier.pt", "unsafe"],
        {"results/digits/empirical/shards/cloning_0.parquet", "results/digits/empirical/shards/snapshots_0.parquet"}),
    "resume state with a pickle payload": (
        "results/digits/models/.state/unet.pt", lambda p, m: (p.write_bytes(payload(m)),
                                                            (p.parent.parent / "unet.pt").unlink()),
        "results/digits/models/unet.pt", [".state/unet.pt", "unsafe"],
        {"results/digits/models/unet.pt", "results/digits/models/unet_log.parquet",
         "results/digits/models/.state/unet.pt"}),
    "resume state of garbage": (
        "results/digits/models/.state/unet.pt", lambda p, m: (_garbage(p, m), (p.parent.parent / "unet.pt").unlink()),
        "results/digits/models/unet.pt", [".state/unet.pt", "delete it"],
        {"results/digits/models/unet.pt", "results/digits/models/unet_log.parquet",
         "results/digits/models/.state/unet.pt"}),
    "empty snapshot table": (
        "results/digits/unet/snapshots.parquet",
        lambda p, m: pq.write_table(pq.read_table(p).slice(0, 0), p),
        "results/figures/digits/samples.png", ["digits/unet/snapshots.parquet", "no snapshot of pair 0"],
        {"results/figures/digits/samples.png"}),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_in_a_run(case, tiny_copy):
    spoiled, how, target, words, outputs = FILE_CASES[case]
    work = tiny_copy
    mark = work.parent / MARK
    path = work / spoiled
    how(path, mark)
    before = snapshot(work)
    proc = snakemake(work, target)
    assert_one_line(proc, *words)
    assert not mark.exists(), "a data file ran code"
    assert_only_changed(before, snapshot(work), outputs | {spoiled})


# ----------------------------------------------------------------------------- image files
def _idx(folder: Path, packed: str | None) -> None:
    folder.mkdir(parents=True)
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    blobs = {"train-images-idx3-ubyte": struct.pack(">IIII", 0x0803, 20, 28, 28) + images.tobytes(),
             "train-labels-idx1-ubyte": struct.pack(">II", 0x0801, 20) + labels.tobytes()}
    for name, blob in blobs.items():
        if packed == "truncated":
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob)[:-40])
        elif packed == "not gzip":
            (folder / f"{name}.gz").write_bytes(blob)
        else:
            (folder / name).write_bytes(blob)


def _cifar(folder: Path, mark: Path) -> None:
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    batch = {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
    for k in range(1, 6):
        (base / f"data_batch_{k}").write_bytes(payload(mark, lambda p: {**batch, "x": p}) if k == 3
                                                else pickle.dumps(batch))


def _imagenet(folder: Path, mark: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "train_data_batch_1").write_bytes(payload(mark, lambda p: {"data": p, "labels": [1]}))


def _celeba_bomb(folder: Path, mark: Path) -> None:
    from test_sources import png_declaring, write_celeba

    write_celeba(folder)
    (folder / "img_align_celeba" / "000002.jpg").write_bytes(png_declaring(100_000, 100_000))


def _imagenet_npz_objects(folder: Path, mark: Path) -> None:
    folder.mkdir(parents=True)
    np.savez(folder / "train_data_batch_1.npz", data=np.array([Payload(mark)], dtype=object), labels=[1])


IMAGE_CASES = {
    "CelebA image declaring 100 000 x 100 000 pixels": ("celeba", _celeba_bomb,
                                                       ["000002.jpg", "declares 10,000,000,000 pixels"]),
    "ImageNet .npz with an object array": ("imagenet_downsampled", _imagenet_npz_objects,
                                           ["train_data_batch_1.npz", "Object arrays cannot be loaded"]),
    "truncated gzip IDX": ("mnist", lambda f, m: _idx(f, "truncated"), ["train-images-idx3-ubyte.gz", "gzip"]),
    "IDX .gz that is not gzip": ("mnist", lambda f, m: _idx(f, "not gzip"), ["train-images-idx3-ubyte.gz", "gzip"]),
    "missing IDX files": ("mnist", lambda f, m: f.mkdir(), ["train-images-idx3-ubyte", "not found"]),
    "CIFAR batch with a pickle payload": ("cifar10", _cifar, ["data_batch_3", "not allowed in a data file"]),
    "ImageNet batch with a pickle payload": ("imagenet_downsampled", _imagenet,
                                             ["train_data_batch_1", "not allowed in a data file"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image_files(case, tmp_path):
    source, make, words = IMAGE_CASES[case]
    mark = tmp_path / MARK
    make(tmp_path / "data", mark)
    cfg = {"experiments": {"img": {"dataset": {"source": source, "classes": [0, 1], "size": 16,
                                               "data_root": str(tmp_path / "data")}, "scores": ["empirical"]}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    assert_one_line(snakemake(work, "results/img/data.parquet", configfile=tmp_path / "c.yaml"), *words)
    assert not mark.exists(), "a data file ran code"
    assert snapshot(work) == {}


# ----------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_no_speciation_regime_stops_before_any_network(tmp_path):
    """Digits at 8x8 have Lambda < 1: the spectrum stage refuses them, and neither the
    classifier nor the U-Net is trained."""
    cfg = _tiny()
    cfg["experiments"] = {"digits": cfg["experiments"]["digits"]}
    cfg["experiments"]["digits"]["dataset"]["size"] = 8
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    assert_one_line(snakemake(work, configfile=tmp_path / "c.yaml"), "digits/data.parquet", "Lambda", "<= 1",
                    "dataset.size")
    made = set(snapshot(work))
    assert "results/digits/data.parquet" in made and not (work / "results/digits/spectrum.parquet").exists()
    assert not [f for f in made if "classifier" in f or "/models/" in f], made  # no network was trained


def test_unexpected_failure_keeps_the_terminal_clean(tmp_path):
    """A bug inside a stage: the traceback goes to the job's log and the streams are restored
    before the log closes (no 'lost sys.stderr')."""
    plugin = tmp_path / "failing.py"
    plugin.write_text(
        "from diffusion_regimes.datamodels import DataModel, register\n"
        "@register\n"
        "class Failing(DataModel):\n"
        "    name, kind = 'failing', 'solvable'\n"
        "    schema = {'properties': {'d': {'type': 'integer'}, 'n': {'type': 'integer'}}}\n"
        "    @classmethod\n"
        "    def sample(cls, dataset, generator):\n"
        "        raise RuntimeError('a bug in the sampler')\n")
    cfg = {"plugins": [str(plugin)], "experiments": {"f": {"dataset": {"source": "failing", "d": 4, "n": 8},
                                                           "scores": ["exact"]}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, "results/f/data.parquet", configfile=tmp_path / "c.yaml")
    assert proc.returncode != 0
    assert "lost sys.stderr" not in proc.stderr and "Exception ignored" not in proc.stderr
    log = (work / "logs/f/subset.log").read_text()
    assert "Traceback" in log and "a bug in the sampler" in log


def test_kill_during_a_write_leaves_nothing_the_next_run_keeps(tmp_path):
    """SIGKILL while a table is being written leaves a temporary file; the next write to the
    same folder removes it. A killed snakemake leaves its lock, which --unlock clears."""
    from diffusion_regimes.io import atomic_path, write_table

    folder = tmp_path / "out"
    folder.mkdir()
    code = ("import time\nfrom diffusion_regimes.io import atomic_path\n"
            f"with atomic_path({str(folder / 'table.parquet')!r}) as tmp:\n"
            "    tmp.write_bytes(b'half')\n    print('writing', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = list(folder.glob(".*.tmp"))
    assert len(stale) == 1 and not (folder / "table.parquet").exists()
    write_table(pa.table({"t": [1.0]}), folder / "other.parquet", {"stage": "test"})
    assert list(folder.glob(".*.tmp")) == [], "the stale temporary is still there"
    with atomic_path(folder / "table.parquet") as tmp:  # a live writer's temporary is never removed
        write_table(pa.table({"t": [2.0]}), folder / "third.parquet", {"stage": "test"})
        assert tmp.exists()
        tmp.write_bytes(b"x")
    assert (folder / "table.parquet").read_bytes() == b"x"


@pytest.mark.slow
def test_killed_snakemake_lock_and_recovery(tmp_path):
    cfg = _tiny()
    cfg["experiments"] = {"gmm": cfg["experiments"]["gmm"]}
    cfg["experiments"]["gmm"]["entropy"]["n_samples"] = 20000  # long enough to be killed in the middle
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    args = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", "1", "--configfile",
            str(tmp_path / "c.yaml")]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=QUICK_ENV)
    deadline = time.time() + 300
    while not (work / "results/gmm/spectrum.parquet").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    locked = run(args, tmp_path)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    assert run(args + ["--unlock"], tmp_path).returncode == 0
    again = run(args + ["--rerun-incomplete", "results/gmm/theory.parquet"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    meta = json.loads(pq.read_schema(work / "results/gmm/theory.parquet").metadata[b"diffusion_regimes"])
    assert meta["stage"] == "theory"


# ----------------------------------------------------------------------------- non-finite numbers
@pytest.mark.slow
def test_a_score_that_returns_nan_stops_the_run_before_any_summary(tmp_path):
    """An external score returning NaN ends its job with one line naming the score model and
    the time: the cloning job's (sanity check off), and the sanity check's before any
    measurement; no summary or Table 1 is written with the bad numbers."""
    (tmp_path / "nan_score.py").write_text(
        "import torch\n"
        "def make(d):\n"
        "    return (lambda x, t: torch.full_like(x, float('nan'))), (d,)\n")
    cfg = {"seed": 0, "experiments": {"g": {
        "dataset": {"source": "gaussian_mixture", "d": 8, "n": 64}, "scores": ["external"],
        "external": {"kind": "python", "entry": f"{tmp_path}/nan_score.py:make", "options": {"d": 8}},
        "network_sampler": {"steps": 10, "T": 4.0}, "sanity": {"enabled": False},
        "cloning": {"n_pairs": 16, "branch_times": [0.5, 1.0], "n_bootstrap": 10},
        "collapse": {"n_trajectories": 8, "n_pairs": 8, "branch_times": [0.2, 0.5], "n_bootstrap": 10},
        "entropy": {"t_min": 0.1, "t_max": 2.0, "n_t": 3, "n_samples": 16}, "theory": {"n_t": 10}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    proc = snakemake(work, "results/g/external/shards/cloning_0.parquet", configfile=path)
    assert_one_line(proc, "score model 'external' returned NaN or inf", "OU time", "of 16 states")
    cfg["experiments"]["g"]["sanity"] = {"enabled": True}
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, configfile=path)  # the whole run: the sanity check stops it, nothing is summarised
    assert proc.returncode != 0 and "score model 'external' returned NaN or inf" in proc.stderr
    assert "sanity" in proc.stdout + proc.stderr and not (work / "results/g/external/cloning.parquet").exists()
    assert not (work / "results/summary.parquet").exists() and not (work / "results/table1.md").exists()


ENTRY_POINTS = """
import time

import torch


def raises(d):
    return (lambda x, t: x / 0 if t < 1.0 else {}["missing"]), (d,)


def wrong_shape(d):
    return (lambda x, t: torch.zeros(len(x), d + 1)), (d,)


def broadcasts(d):  # one row for every state: (1, d) broadcasts against (n, d)
    return (lambda x, t: -x.mean(0, keepdim=True)), (d,)


def not_a_tensor(d):
    return (lambda x, t: (-x).tolist()), (d,)


def never_returns(d):
    def score(x, t):
        while True:
            time.sleep(0.05)
    return score, (d,)
"""

ENTRY_CASES = {  # entry point: words of its one line
    "raises": ["score model 'external' raised KeyError", "'missing'"],
    "wrong_shape": ["returned scores of shape (16, 9) for states of shape (16, 8)"],
    "broadcasts": ["returned scores of shape (1, 8) for states of shape (16, 8)", "only broadcasts"],
    "not_a_tensor": ["returned scores of a list"],
    "never_returns": ["stopped after 0.1 min, its time limit", "job_time_limit"],
}


@pytest.mark.slow
def test_entry_points_that_misbehave_are_one_line_each(tmp_path):
    """Family 5: an entry point's score that raises, returns a wrong or merely broadcasting
    shape or no tensor, or never returns (the config's job_time_limit) ends its job with one
    line; nothing is written. One experiment per entry point, one run (--keep-going)."""
    (tmp_path / "entries.py").write_text(ENTRY_POINTS)
    experiments = {f"e_{entry}": {
        "dataset": {"source": "gaussian_mixture", "d": 8, "n": 64}, "scores": ["external"],
        "external": {"kind": "python", "entry": f"{tmp_path}/entries.py:{entry}", "options": {"d": 8}},
        "network_sampler": {"steps": 10, "T": 4.0}, "sanity": {"enabled": False},  # the sampling path's checks
        "cloning": {"n_pairs": 16, "branch_times": [0.5, 1.0], "n_bootstrap": 10}} for entry in ENTRY_CASES}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"seed": 0, "job_time_limit": 0.1, "experiments": experiments}))
    work = tmp_path / "work"
    start = time.monotonic()
    targets = [f"results/{exp}/external/shards/cloning_0.parquet" for exp in experiments]
    proc = snakemake(work, *targets, configfile=tmp_path / "c.yaml", extra=("--keep-going",))
    assert_one_line_each(proc, ENTRY_CASES)
    assert time.monotonic() - start < 180
    assert not [p for p in (work / "results").rglob("*") if "/external" in p.as_posix() and p.is_file()]


def test_a_diverging_training_stops_and_keeps_its_last_finite_state(tmp_path):
    from diffusion_regimes.errors import InputError
    from diffusion_regimes.io import load_checkpoint
    from diffusion_regimes.training import train_network

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    train = {"steps": 200, "batch_size": 16, "lr": 1e12, "lr_decay": 1.0, "lr_decay_epochs": 1}
    with pytest.raises(InputError, match="training mlp diverged: the loss is") as err:
        train_network(x, "mlp", {"width": 16, "depth": 1, "time_dim": 8, "dropout": 0.0}, (4,), train, 0,
                      tmp_path / "state.pt", progress=False, options={"checkpoint_every": 1})
    assert "\n" not in str(err.value) and "lower train.lr" in str(err.value)
    state = load_checkpoint(tmp_path / "state.pt", required=("step", "log"))
    diverged = int(str(err.value).split("at step ")[1].split(";")[0])
    assert state["step"] == diverged - 1 and torch.isfinite(state["log"][:, 1]).all()


def test_a_nan_in_a_data_file_is_refused_with_its_row(tmp_path):
    from diffusion_regimes import stages
    from diffusion_regimes.data import load_subset
    from diffusion_regimes.errors import InputError

    data = tmp_path / "d.parquet"
    stages.subset({}, {"data": str(data), "reference": str(tmp_path / "r.parquet")}, "e",
                  {"source": "gaussian_mixture", "d": 4, "n": 10, "mu_tilde": 1.0, "sigma": 1.0, "n_reference": 10}, 0)
    table = pq.read_table(data)
    x = np.stack(table.column("x").to_numpy(zero_copy_only=False)).astype(np.float32)
    x[7, 2] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)
    pq.write_table(table.set_column(table.schema.get_field_index("x"), "x", column), data)
    with pytest.raises(InputError, match="row 7 of x holds NaN or inf") as err:
        load_subset(str(data))
    assert "d.parquet" in str(err.value) and "\n" not in str(err.value)


def test_a_nan_in_an_entropy_shard_is_refused_with_its_file(tmp_path):
    import pandas as pd

    from diffusion_regimes.errors import InputError
    from diffusion_regimes.io import concat_tables, make_metadata, write_table

    paths = []
    for k, f in enumerate([0.3, float("nan")]):
        paths.append(str(tmp_path / f"entropy_{k}.parquet"))
        write_table(pd.DataFrame({"t": [0.1 * (k + 1)], "f": [f], "f_se": [0.01]}), paths[-1],
                    make_metadata("entropy_shard", {}, 0, {}))
    with pytest.raises(InputError, match=r"entropy_1.parquet: f is nan in row 0 \(t = 0.2\)"):
        concat_tables(paths, "t", "entropy_shard", finite=("f", "f_se"))
    assert len(concat_tables(paths, "t", "entropy_shard")) == 2  # without the check: the old behaviour


@pytest.mark.slow
def test_a_damaged_middle_snapshot_costs_no_valid_file_and_the_fix_restores_the_study(tmp_path):
    """Family 2: a middle weight snapshot of the memorisation chain overwritten with random bytes
    is refused before any job starts (Snakemake would otherwise remove the valid later snapshot
    and the measurements while starting the jobs that read it); following the printed fix
    (delete the file, run again) gives back the same, complete study."""
    from test_memorisation import MEMO_CONFIG

    from diffusion_regimes.io import read_table

    config = tmp_path / "memo.yaml"
    config.write_text(MEMO_CONFIG.replace("STEPS", "40").replace("n: [8, 16]", "n: [8]"))
    work = tmp_path / "work"
    work.mkdir()
    study_target = "results/memo_n8/mlp/memorisation.parquet"
    assert snakemake(work, study_target, configfile=config).returncode == 0
    study = work / study_target
    table_before = read_table(study)[0]
    middle = work / "results/memo_n8/models/mlp_snapshots/step32.pt"
    weights_before = torch.load(middle, weights_only=True)["state_dict"]
    middle.write_bytes(np.random.default_rng(0).bytes(middle.stat().st_size))
    before = snapshot(work)
    line = assert_one_line(snakemake(work, study_target, configfile=config), "mlp_snapshots/step32.pt",
                           "nothing was run or removed",
                           "--forcerun")
    assert snapshot(work) == before, "a valid file was removed or changed"
    fix = line.split("adding ")[1].split(" to remake")[0].split()  # the printed fix: --forcerun FILE
    proc = snakemake(work, study_target, configfile=config, extra=tuple(fix))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(snapshot(work)) == set(before)
    weights = torch.load(middle, weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], weights_before[k]) for k in weights_before)
    pd.testing.assert_frame_equal(read_table(study)[0], table_before)
    dry = snakemake(work, study_target, configfile=config, extra=("-n",))
    assert "Nothing to be done" in dry.stdout + dry.stderr


# ----------------------------------------------------------------------------- the file system
FAILING_WRITES = """
import errno
import os
import sys

_code = os.environ.get("DIFFUSION_REGIMES_TEST_FAIL_WRITES")
if _code and sys.argv and sys.argv[0].endswith("stage.py"):  # only the jobs' stage scripts
    def _refuse(src, dst, *args, **kwargs):
        number = getattr(errno, _code)
        raise OSError(number, os.strerror(number), str(dst))
    os.replace = _refuse
"""


@pytest.mark.slow
@pytest.mark.parametrize("code, words", [("ENOSPC", ["No space left on device", "free disk space"]),
                                         ("EROFS", ["Read-only file system", "make the results folder writable"])])
def test_a_file_system_that_refuses_the_write_is_one_line(code, words, tmp_path):
    """Family 7: a full disk and a read-only results folder, met when a job renames its finished
    output into place (the faults injected into the job's process only), end the job with one
    line naming the file and what to do; no partial output is left."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAILING_WRITES)
    env = {**QUICK_ENV, "DIFFUSION_REGIMES_TEST_FAIL_WRITES": code,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(inject), QUICK_ENV.get("PYTHONPATH")]))}
    work = tmp_path / "work"
    proc = subprocess.run([SNAKEMAKE, "results/gmm/data.parquet", "-s", str(ROOT / "Snakefile"), "-d", str(work),
                           "--cores", "1", "--configfile", str(TINY)], capture_output=True, text=True, timeout=600,
                          env=env)
    line = assert_one_line(proc, "subset cannot write", "results/gmm/data.parquet", *words)
    assert line.endswith("and run again"), line
    assert not [p for p in (work / "results").rglob("*") if p.is_file()], "a partial output was left"
