"""``external``: a score model trained elsewhere (the experiment's ``external`` block): a
diffusers folder, an EDM-style network or an entry point, converted to the project's OU
time and score interface by :mod:`diffusion_regimes.external`.

This module (torch-free) owns what the workflow and validation read before any job: the
files of a model (:func:`external_inputs`), a discrete schedule's ``abar_k`` and OU times
(:func:`scheduler_alpha_bar`, :class:`DiscreteTime`), and the OU times a diffusers
folder's scheduler covers (:func:`diffusers_time_range`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..predictions import PREDICTIONS
from ..schedule import ou_time, sampler_grid
from . import ScoreModel, config_error, register

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
        unet, sched = diffusers_folders(Path(cfg["path"]))
        return [str(unet / "config.json"), str(weights_file(unet)), str(sched)]
    module = (cfg.get("entry") or "").rpartition(":")[0]
    return [module] if module.endswith(".py") else []


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
    unet_dir, sched_file = diffusers_folders(Path(path))
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

    @classmethod
    def inputs(cls, exp: str, exp_cfg: dict) -> dict[str, str | list[str]]:
        return {"external": external_inputs(exp_cfg["external"])}

    @classmethod
    def check(cls, where: str, exp_cfg: dict, data_kind: str) -> None:
        """The keys each kind of external model needs, its folder (nothing is fetched), and for
        diffusers models the network sampler's range inside the model's steps."""
        where_ext = f"{where}.external"
        ext = exp_cfg["external"]
        kind = ext["kind"]
        if kind is None:
            raise config_error(f"{where_ext}.kind", "score model 'external' needs external.kind: diffusers, edm "
                               "or python")
        need = {"diffusers": ("path",), "edm": ("entry", "shape"), "python": ("entry",)}[kind]
        for key in need:
            if ext[key] is None:
                raise config_error(f"{where_ext}.{key}", f"external.kind {kind} needs external.{key}")
        if kind == "diffusers" and not Path(ext["path"]).is_dir():
            raise config_error(f"{where_ext}.path", f"{ext['path']} is not a folder: give the local folder that "
                               "save_pretrained wrote (nothing is downloaded)")
        if kind == "diffusers":  # the folder's files, checked once here (no torch)
            try:
                external_inputs(ext)
                first, last = diffusers_time_range(ext["path"])
            except InputError as err:
                raise config_error(f"{where_ext}.path", str(err)) from None
            lo, hi = sampler_range(exp_cfg[cls.sampler])
            if hi > last + 1e-9 or lo < first * (1 - 1e-6):
                raise config_error(f"{where}.{cls.sampler}", f"its grid [{lo:.4g}, {hi:.4g}] leaves the model's "
                                   f"steps, OU times [{first:.4g}, {last:.4g}]: set T and t_end inside them")
        if ext["entry"] is not None and ":" not in ext["entry"]:
            raise config_error(f"{where_ext}.entry", "give module:function or path/to/file.py:function")

    @classmethod
    def build(cls, spec: dict, x, data_model, files: dict):
        from ..external import external_score

        sampler = spec.get("sampler") or {}
        return external_score(spec["settings"], x.shape[1], spec.get("device") or "auto",
                              sampler.get("batch_size", 512))
