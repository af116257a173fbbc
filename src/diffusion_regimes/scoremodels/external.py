"""``external``: a score model trained elsewhere (the experiment's ``external`` block): a
diffusers folder, an EDM-style network or an entry point, converted to the project's OU
time and score interface by :mod:`diffusion_regimes.external`.

This module (torch-free) owns what the workflow and validation read before any job: the
files of a model (:func:`external_inputs`), a discrete schedule's ``abar_k`` and OU times
(:func:`scheduler_alpha_bar`, :class:`DiscreteTime`), and the OU times a diffusers
folder's scheduler covers (:func:`diffusers_time_range`)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..predictions import PREDICTIONS
from ..schedule import ou_time, sampler_grid
from . import MODEL_FILES, ScoreModel, config_error, register

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


# ----------------------------------------------------------------------------- discrete schedules
def scheduler_alpha_bar(cfg: dict) -> np.ndarray:
    """``abar_k`` (T,) float64 of a diffusers scheduler config, as diffusers computes it.
    Only discrete beta schedules are read (DDPM, DDIM, PNDM, Euler, DPM-Solver, ...): a
    scheduler without betas (variance-exploding, EDM) or with zero-terminal-SNR rescaling
    is refused with one line."""
    if "beta_schedule" not in cfg and cfg.get("trained_betas") is None:
        raise InputError(f"scheduler {cfg.get('_class_name', '?')} has no beta schedule: only discrete beta "
                         "schedulers (DDPM, DDIM, ...) are read; wrap other models with external.kind edm or python")
    if cfg.get("rescale_betas_zero_snr"):
        raise InputError("scheduler rescale_betas_zero_snr is not supported (abar_T = 0 has no finite OU time); "
                         "wrap the model with external.kind python")
    T = int(cfg.get("num_train_timesteps", 1000))
    kind = cfg.get("beta_schedule", "linear")
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 2e-2))
    if cfg.get("trained_betas") is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float64)
    elif kind == "linear":
        betas = np.linspace(start, end, T, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, T, dtype=np.float64) ** 2
    elif kind == "squaredcos_cap_v2":  # Nichol & Dhariwal's cosine schedule, betas capped at 0.999
        def f(u: np.ndarray) -> np.ndarray:
            return np.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        k = np.arange(T, dtype=np.float64)
        betas = np.minimum(1.0 - f((k + 1) / T) / f(k / T), 0.999)
    else:
        raise InputError(f"scheduler beta_schedule {kind!r} is not one of {BETA_SCHEDULES}")
    return np.cumprod(1.0 - betas)


class DiscreteTime:
    """The OU times ``t_k = -1/2 log abar_k`` of a discrete schedule's steps k = 0..T-1, and
    the piecewise-linear maps between OU time and a fractional step."""

    def __init__(self, alpha_bar: np.ndarray):
        self.times = ou_time(alpha_bar)
        if not np.all(np.diff(self.times) > 0):
            raise InputError("the scheduler's abar is not decreasing: its OU times do not increase")
        self.steps = np.arange(len(self.times), dtype=np.float64)

    @property
    def t_max(self) -> float:
        return float(self.times[-1])

    def step(self, t: float) -> float:
        """The fractional step of OU time t (clamped to the schedule's range)."""
        return float(np.interp(t, self.times, self.steps))

    def time(self, step: float) -> float:
        """The OU time of a fractional step (the inverse map)."""
        return float(np.interp(step, self.steps, self.times))


# ----------------------------------------------------------------------------- a diffusers folder
#: a Hugging Face Hub id, ``owner/name`` with an optional ``@revision``
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


def hub_cache() -> Path:
    """The local Hugging Face Hub cache, as the hub library finds it: ``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def model_folder(path: str | os.PathLike) -> Path:
    """The local folder of ``external.path``: the folder itself, or for a Hub id
    (``owner/name``, ``owner/name@revision``) that is not a folder here its snapshot in the
    local Hugging Face cache (``models--owner--name/snapshots/{commit}``, the commit read from
    ``refs/{revision or main}``, or a commit given as the revision). Nothing is downloaded: an
    id that is not in the cache is refused with one line."""
    p = Path(path)
    match = HUB_ID.match(str(path))
    if p.is_dir() or match is None:
        return p
    repo, revision = match["repo"], match["revision"] or "main"
    cache = hub_cache()
    entry = cache / ("models--" + repo.replace("/", "--"))
    ref = entry / "refs" / revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
    snapshot = entry / "snapshots" / commit
    if not snapshot.is_dir():
        raise InputError(f"{path} is not a folder, nor a Hugging Face Hub id in the local cache ({entry} has no "
                         f"snapshot for {revision!r}): give the local folder that save_pretrained wrote, or fetch "
                         f"the model once with `huggingface-cli download {repo}` (nothing is downloaded here)")
    return snapshot


def diffusers_folders(path: Path) -> tuple[Path, Path]:
    """(folder of the UNet, scheduler config file) of a save_pretrained layout."""
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (external.path must be a diffusers save_pretrained folder)")
    unet = path / "unet" if (path / "unet" / "config.json").exists() else path
    for cand in (unet / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
                 path / "scheduler_config.json"):
        if cand.exists():
            return unet, cand
    raise InputError(f"{path}: no scheduler_config.json (beside the model, or in scheduler/); save the "
                     "scheduler with scheduler.save_pretrained(folder)")


def weights_file(folder: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).exists():
            return folder / name
    raise InputError(f"{folder}: no diffusion_pytorch_model.safetensors or .bin weights; save the model with "
                     "save_pretrained(folder)")


def external_inputs(cfg: dict) -> list[str]:
    """The files an ``external`` block reads (so that the workflow re-runs what uses the model
    when they change): a diffusers folder's config, weights and scheduler config, or the
    ``.py`` file of an entry point. Imports no torch."""
    if cfg.get("kind") == "diffusers":
        unet, sched = diffusers_folders(model_folder(cfg["path"]))
        return [str(unet / "config.json"), str(weights_file(unet)), str(sched)]
    module = (cfg.get("entry") or "").rpartition(":")[0]
    return [module] if module.endswith(".py") else []


#: a file a model's folder may hold: the data it was trained on, as positions in its source
#: (``{"source": name, "classes": [...], "source_index": [...]}``; :func:`write_training_data`)
TRAINING_DATA = "training_data.json"


def write_training_data(folder: str | os.PathLike, data: str | os.PathLike) -> Path:
    """Record in a model's folder which images of the source it was trained on: the
    ``source_index`` column and the source of the subset file ``data`` (the workflow's
    ``data.parquet``), so that the measurement can warn when they overlap its reference set."""
    import pyarrow.parquet as pq

    from ..io import read_metadata

    meta = read_metadata(data, "subset")
    index = pq.read_table(data, columns=["source_index"]).column("source_index").to_pylist()
    path = Path(folder) / TRAINING_DATA
    path.write_text(json.dumps({"source": meta.get("source"), "classes": meta.get("classes"),
                                "source_index": index}), encoding="utf-8")
    return path


def recorded_training_data(cfg: dict) -> dict | None:
    """The training data an ``external`` block's model folder records (:data:`TRAINING_DATA`),
    or None where it records none."""
    if cfg.get("kind") != "diffusers" or not cfg.get("path"):
        return None
    record = model_folder(cfg["path"]) / TRAINING_DATA
    if not record.is_file():
        return None
    found = _read_json(record)
    if not isinstance(found, dict) or not isinstance(found.get("source_index"), list):
        raise InputError(f"{record}: not a record of training data (a JSON object with "
                         "source and source_index); write it with diffusion_regimes.scoremodels.external."
                         "write_training_data or remove it")
    return found


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file (hex), computed once per size and modification time."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def model_provenance(cfg: dict) -> dict:
    """What identifies an ``external`` block's model: for a diffusers folder its absolute path,
    the weights file and its SHA-256, the prediction type and the schedule; for an entry
    point the entry, its options (and the SHA-256 of a ``.py`` file), the preconditioning and
    shape of ``edm``. ``id`` is one line of it. Imports no torch."""
    kind = cfg.get("kind")
    if kind == "diffusers":
        folder = model_folder(cfg["path"])
        unet_dir, config, sched = read_diffusers_configs(folder)
        weights = weights_file(unet_dir)
        digest = file_sha256(weights)
        schedule = {"class": sched.get("_class_name"), "beta_schedule": sched.get("beta_schedule", "linear"),
                    "num_train_timesteps": sched.get("num_train_timesteps", 1000),
                    "beta_start": sched.get("beta_start", 1e-4), "beta_end": sched.get("beta_end", 2e-2)}
        prediction = sched.get("prediction_type", "epsilon")
        record = folder / TRAINING_DATA
        hub = {} if Path(cfg["path"]).is_dir() else {"hub_id": str(cfg["path"])}
        return {"kind": kind, "path": str(folder.resolve()), **hub, "weights": str(weights.name),
                **({"training_data_sha256": file_sha256(record)} if record.is_file() else {}),
                "weights_sha256": digest, "prediction_type": prediction, "schedule": schedule,
                "id": f"{hub.get('hub_id', folder.resolve())} sha256:{digest[:12]} {prediction} "
                      f"{schedule['beta_schedule']} {schedule['num_train_timesteps']} steps"}
    entry = cfg.get("entry") or ""
    module = entry.rpartition(":")[0]
    found = {"kind": kind, "entry": entry, "options": cfg.get("options") or {}}
    if module.endswith(".py") and Path(module).is_file():
        found["file_sha256"] = file_sha256(module)
    if kind == "edm":
        found.update(preconditioning=cfg.get("preconditioning"), shape=cfg.get("shape"))
    options = json.dumps(found["options"], sort_keys=True, default=str) if found["options"] else ""
    found["id"] = " ".join([kind or "?", entry] + ([f"sha256:{found['file_sha256'][:12]}"]
                                                    if "file_sha256" in found else [])
                           + ([f"options {options}"] if options else []))
    return found


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_scheduler_config(sched: dict, where: str | os.PathLike) -> None:
    """Refuse, with one line naming ``where``, a scheduler config whose values have the wrong
    type or range (diffusers itself would fail late or compute a wrong schedule)."""
    def bad(key: str, why: str) -> InputError:
        return InputError(f"{where}: {key} {why}; fix it or save the scheduler again (scheduler.save_pretrained)")

    if not isinstance(sched, dict):
        raise InputError(f"{where}: not a JSON object; save the scheduler again (scheduler.save_pretrained)")
    steps = sched.get("num_train_timesteps", 1000)
    if not _is_count(steps, 2):
        raise bad("num_train_timesteps", f"is {steps!r}, not an integer >= 2")
    for key in ("beta_start", "beta_end"):
        if key in sched and not (_is_number(sched[key]) and 0 < sched[key] < 1):
            raise bad(key, f"is {sched[key]!r}, not a number in (0, 1)")
    if sched.get("beta_start", 1e-4) > sched.get("beta_end", 2e-2):
        raise bad("beta_start", f"{sched.get('beta_start', 1e-4)} exceeds beta_end {sched.get('beta_end', 2e-2)}")
    kind = sched.get("beta_schedule", "linear")
    if sched.get("trained_betas") is None and kind not in BETA_SCHEDULES:
        raise bad("beta_schedule", f"{kind!r} is not one of {BETA_SCHEDULES}")
    betas = sched.get("trained_betas")
    if betas is not None:
        if not (isinstance(betas, list) and all(_is_number(b) and 0 < b < 1 for b in betas)):
            raise bad("trained_betas", "is not a list of numbers in (0, 1)")
        if len(betas) != steps:
            raise bad("trained_betas", f"has {len(betas)} values, num_train_timesteps is {steps}")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise bad("prediction_type", f"{prediction!r} is not one of {tuple(PREDICTIONS)}")
    try:  # the schedule itself: beta schedules only, OU times increasing
        DiscreteTime(scheduler_alpha_bar(sched))
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def check_unet_config(config: dict, where: str | os.PathLike) -> None:
    """Refuse, with one line naming ``where``, a UNet config.json whose shape keys have the
    wrong type (``sample_size``, ``in_channels``, ``out_channels``)."""
    if not isinstance(config, dict):
        raise InputError(f"{where}: not a JSON object; save the model again (save_pretrained)")
    size = config.get("sample_size")
    if not (_is_count(size) or (isinstance(size, list) and len(size) == 2 and all(map(_is_count, size)))):
        raise InputError(f"{where}: sample_size is {size!r}, not a positive integer or a pair of them: set it to "
                         "the model's resolution")
    for key in ("in_channels", "out_channels"):
        if key in config and not _is_count(config[key]):
            raise InputError(f"{where}: {key} is {config[key]!r}, not a positive integer")
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise InputError(f"{where}: a {config.get('_class_name')}, not a UNet2DModel")
    if config.get("time_embedding_type") == "fourier":
        raise InputError(f"{where}: time_embedding_type fourier takes a noise level, not a step: use "
                         "external.kind edm")
    if config.get("num_class_embeds") is not None:
        raise InputError(f"{where}: a class-conditional model (num_class_embeds) needs labels: wrap it with "
                         "external.kind python")
    if config.get("out_channels", 3) != config.get("in_channels", 3):
        raise InputError(f"{where}: out_channels {config.get('out_channels')} != in_channels "
                         f"{config.get('in_channels')} (a learned variance?): wrap it with external.kind python")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSON syntax and text encodings
        raise InputError(f"{path}: unreadable JSON ({str(err).splitlines()[0][:120]}); save it again") from None


def read_diffusers_configs(path: str | os.PathLike) -> tuple[Path, dict, dict]:
    """(folder of the UNet, its config.json, the scheduler config) of a save_pretrained
    folder, both configs checked (:func:`check_unet_config`, :func:`check_scheduler_config`).
    Imports no torch."""
    unet_dir, sched_file = diffusers_folders(model_folder(path))
    config, sched = _read_json(unet_dir / "config.json"), _read_json(sched_file)
    check_unet_config(config, unet_dir / "config.json")
    check_scheduler_config(sched, sched_file)
    return unet_dir, config, sched


def diffusers_time_range(path: str | os.PathLike) -> tuple[float, float]:
    """OU times (t of the first step, t of the last) of a diffusers folder's scheduler, its
    configs checked first. Imports no torch."""
    clock = DiscreteTime(scheduler_alpha_bar(read_diffusers_configs(path)[2]))
    return float(clock.times[0]), clock.t_max


# ----------------------------------------------------------------------------- the kind


def _check_shape(where: str, ext: dict, dataset: dict) -> None:
    """A diffusers model's sample shape (``in_channels`` x ``sample_size``) against the shape
    the dataset block will give, before any job (no data read)."""
    from ..datamodels import data_model

    try:
        planned = tuple(data_model(dataset["source"]).planned_shape(dataset))
    except InputError:  # the dataset block's own check says why
        return
    config = read_diffusers_configs(ext["path"])[1]
    size = config.get("sample_size")
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(config.get("in_channels", 3)), *size)
    if math.prod(shape) != math.prod(planned) or (len(planned) == 3 and shape != planned):
        raise config_error(f"{where}.path", f"the model takes samples of shape {shape} (in_channels x sample_size), "
                           f"but the dataset block gives {planned}: set dataset.size (and grayscale) to the model's "
                           "resolution and channels, or measure another model")


def sampler_range(s: dict) -> tuple[float, float]:
    """(t_end, T): the OU times of the first and last point of a sampler block's grid."""
    grid = sampler_grid(s)
    return float(grid[-1]), float(grid[0])


@register
class External(ScoreModel):
    """A model from elsewhere; its files are inputs, so that a new model re-runs what uses it."""

    name = "external"
    block = "external"
    sampler = "network_sampler"
    network = True
    nonfinite_hint = "check the model's files, its scale (data as the dataset block gives them) or the entry point"
    user_code = True
    labelled = True  # external.models: {label: block} are the score models external_{label}

    @classmethod
    def settings(cls, exp_cfg: dict) -> dict:
        """The model's block: ``external`` itself (without ``models``), or for the variant
        ``external_{label}`` the block ``external.models.{label}``."""
        block = exp_cfg["external"]
        if cls.label is None:
            return {k: v for k, v in block.items() if k != "models"}
        return block["models"][cls.label]

    @classmethod
    def inputs(cls, exp: str, exp_cfg: dict) -> dict[str, str | list[str]]:
        return {"external": external_inputs(cls.settings(exp_cfg))}

    @classmethod
    def training_data(cls, settings: dict) -> dict | None:
        return recorded_training_data(settings)

    @classmethod
    def provenance(cls, exp_cfg: dict) -> dict | None:
        try:
            return model_provenance(cls.settings(exp_cfg))
        except InputError as err:  # check_models: false and no model yet: the job that loads it says so
            return {"kind": cls.settings(exp_cfg)["kind"], "id": f"unreadable ({err})"}

    @classmethod
    def check(cls, where: str, exp_cfg: dict, data_kind: str) -> None:
        """The keys each kind of external model needs, its folder (nothing is fetched), and for
        diffusers models the network sampler's range inside the model's steps."""
        where_ext = f"{where}.external" + (f".models.{cls.label}" if cls.label else "")
        if cls.label is not None and cls.label not in exp_cfg["external"]["models"]:
            raise config_error(f"{where}.scores", f"score model {cls.name!r} needs external.models.{cls.label} (the "
                               f"model's block; labels given: {sorted(exp_cfg['external']['models'])})")
        ext = cls.settings(exp_cfg)
        kind = ext["kind"]
        if kind is None:
            block = where_ext[len(where) + 1:]
            raise config_error(f"{where_ext}.kind", f"score model {cls.name!r} needs {block}.kind: diffusers, edm "
                               "or python")
        need = {"diffusers": ("path",), "edm": ("entry", "shape"), "python": ("entry",)}[kind]
        for key in need:
            if ext[key] is None:
                raise config_error(f"{where_ext}.{key}", f"external.kind {kind} needs external.{key}")
        if ext["entry"] is not None and ":" not in ext["entry"]:
            raise config_error(f"{where_ext}.entry", "give module:function or path/to/file.py:function")
        if not MODEL_FILES.get():  # check_models: false, the model may not exist yet
            return
        if kind == "diffusers" and HUB_ID.match(str(ext["path"])) and not Path(ext["path"]).is_dir():
            try:  # a Hub id: its snapshot in the local cache
                model_folder(ext["path"])
            except InputError as err:
                raise config_error(f"{where_ext}.path", str(err)) from None
        elif kind == "diffusers" and not Path(ext["path"]).is_dir():
            raise config_error(f"{where_ext}.path", f"{ext['path']} is not a folder: give the local folder that "
                               "save_pretrained wrote (nothing is downloaded)")
        if kind == "diffusers":  # the folder's files, checked once here (no torch)
            try:
                external_inputs(ext)
                first, last = diffusers_time_range(ext["path"])
            except InputError as err:
                raise config_error(f"{where_ext}.path", str(err)) from None
            _check_shape(where_ext, ext, exp_cfg["dataset"])
            lo, hi = sampler_range(exp_cfg[cls.sampler])
            if hi > last + 1e-9 or lo < first * (1 - 1e-6):
                raise config_error(f"{where}.{cls.sampler}", f"its grid [{lo:.4g}, {hi:.4g}] leaves the model's "
                                   f"steps, OU times [{first:.4g}, {last:.4g}]: set T and t_end inside them")

    @classmethod
    def build(cls, spec: dict, x, data_model, files: dict):
        from ..external import external_score

        sampler = spec.get("sampler") or {}
        return external_score(spec["settings"], x.shape[1], spec.get("device") or "auto",
                              sampler.get("batch_size", 512))
