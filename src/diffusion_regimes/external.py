"""Score models trained elsewhere, converted to the project's OU time and score interface.

Three ways (the config's ``external`` block, score model ``external``):

- ``diffusers``: a local folder in diffusers' ``save_pretrained`` layout, a
  ``UNet2DModel`` (``config.json`` and ``diffusion_pytorch_model.safetensors`` or
  ``.bin``) and its scheduler (``scheduler_config.json`` beside it or in
  ``scheduler/``; or a pipeline folder with ``unet/`` and ``scheduler/``). Nothing is
  fetched; the weights load through safetensors or ``torch.load(weights_only=True)``.
  The scheduler's betas (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``) give
  ``abar_k``, hence the OU time of step k, ``t_k = -1/2 log abar_k``; an OU time between
  steps is passed as the fractional step that interpolates ``t_k`` linearly. The
  prediction converts to the score at OU time t (``alpha = e^{-t}``, ``s^2 = Delta_t``):
  epsilon ``F = -eps / s``; v (``v = alpha eps - s x0``) ``F = -(alpha v + s x) / s``;
  sample ``F = (alpha x0 - x) / s^2``.
- ``edm``: a raw network ``F(c_in x, c_noise)`` with EDM's preconditioning (Karras et
  al. 2022): ``vp``, ``ve`` or ``edm`` (``D = c_skip x + c_out F(c_in x, c_noise)``), or
  ``denoiser`` when the entry point returns ``D(x, sigma)`` itself. EDM works in the
  variance-exploding scale: ``x_VE = e^t x_OU``, ``sigma = sqrt(e^{2t} - 1)``, and the OU
  score is ``F = e^t (D(x_VE; sigma) - x_VE) / sigma^2``.
- ``python``: an entry point ``module:function`` (or ``path/to/file.py:function``)
  called with the block's ``options``, returning ``(score, shape)``: a callable with the
  project's interface ``score(x: (B, d), t: float) -> (B, d)`` in OU time, and the shape
  of one sample.

The model must have been trained on the data as the dataset block gives them (for image
sources: pixels in [0, 1] centred by the training split's mean, unless ``standardize``).
torch is imported inside the functions, so that the workflow can list a model's files
(:func:`external_inputs`) without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .schedule import delta, ou_time

if TYPE_CHECKING:
    import torch

PREDICTIONS = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PRECONDITIONINGS = ("vp", "ve", "edm", "denoiser")


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


def prediction_to_score(pred: torch.Tensor, x: torch.Tensor, t: float, prediction: str) -> torch.Tensor:
    """The score at OU time t of states x from a network's prediction (same shape as x): the
    prediction is turned into the noise eps of ``x = alpha x0 + s eps`` (``alpha = e^{-t}``,
    ``s^2 = Delta_t``), whose score is :func:`diffusion_regimes.networks.eps_to_score`."""
    from .networks import eps_to_score

    alpha, s = math.exp(-t), math.sqrt(delta(t))
    if prediction == "epsilon":
        eps = pred
    elif prediction == "v_prediction":  # v = alpha eps - s x0  =>  eps = alpha v + s x
        eps = alpha * pred + s * x
    elif prediction == "sample":  # eps = (x - alpha x0) / s
        eps = (x - alpha * pred) / s
    else:
        raise InputError(f"prediction type {prediction!r} is not one of {PREDICTIONS}")
    return eps_to_score(eps, t)


class DiscreteScore:
    """The score of a network of a discrete schedule: ``model(x: (B, *shape), step: (B,)) ->
    prediction``, evaluated ``batch_size`` rows at a time on ``device``."""

    def __init__(self, model: Callable, shape: tuple[int, ...], clock: DiscreteTime, prediction: str,
                 batch_size: int = 256, device: str = "cpu"):
        if prediction not in PREDICTIONS:
            raise InputError(f"prediction type {prediction!r} is not one of {PREDICTIONS}")
        from .device import resolve_device

        self.model, self.shape, self.clock, self.prediction = model, tuple(shape), clock, prediction
        self.batch_size, self.device = int(batch_size), resolve_device(device)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        import torch

        if t > self.clock.t_max + 1e-9:
            raise InputError(f"OU time {t:.4g} is beyond the model's last step (t = {self.clock.t_max:.4g}): "
                             "lower the network_sampler's T")
        if t < self.clock.times[0] * (1 - 1e-6):
            raise InputError(f"OU time {t:.4g} is before the model's first step (t = {self.clock.times[0]:.4g}): "
                             "raise the network_sampler's t_end")
        from .networks import evaluate_in_batches

        step = self.clock.step(t)

        def one_batch(xb: torch.Tensor) -> torch.Tensor:
            k = torch.full((xb.shape[0],), step, dtype=torch.float32, device=self.device)
            pred = self.model(xb.view(-1, *self.shape), k).float().reshape(xb.shape[0], -1)
            return prediction_to_score(pred, xb, t, self.prediction)

        return evaluate_in_batches(one_batch, x, self.batch_size, self.device)


# ----------------------------------------------------------------------------- diffusers
def _diffusers_folders(path: Path) -> tuple[Path, Path]:
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


def _weights_file(folder: Path) -> Path:
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
        unet, sched = _diffusers_folders(Path(cfg["path"]))
        return [str(unet / "config.json"), str(_weights_file(unet)), str(sched)]
    module = (cfg.get("entry") or "").rpartition(":")[0]
    return [module] if module.endswith(".py") else []


def diffusers_time_range(path: str | os.PathLike) -> tuple[float, float]:
    """OU times (t of the first step, t of the last) of a diffusers folder's scheduler.
    Imports no torch."""
    _, sched_file = _diffusers_folders(Path(path))
    try:
        sched = json.loads(sched_file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{sched_file}: unreadable scheduler config ({err}); save the scheduler again") from None
    times = ou_time(scheduler_alpha_bar(sched))
    return float(times[0]), float(times[-1])


def _load_weights(folder: Path) -> dict:
    """The state dict of a diffusers folder: safetensors, or a .bin read with weights_only=True."""
    path = _weights_file(folder)
    if path.suffix != ".safetensors":
        from .io import load_checkpoint

        return load_checkpoint(path)
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types for bad files
        raise InputError(f"{path}: not a readable safetensors file ({type(err).__name__}); save the model "
                         "again") from None


def load_diffusers(path: str | os.PathLike, device: str = "cpu", batch_size: int = 256) -> DiscreteScore:
    """A diffusers UNet2DModel and its scheduler from a local folder, as a score in OU time."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise InputError("external.kind: diffusers needs the diffusers package (pip install diffusers)") from None
    unet_dir, sched_file = _diffusers_folders(Path(path))
    try:
        config = json.loads((unet_dir / "config.json").read_text())
        sched = json.loads(sched_file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{unet_dir}: unreadable config ({err}); save the model again") from None
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise InputError(f"{unet_dir}: a {config.get('_class_name')}, not a UNet2DModel")
    if config.get("time_embedding_type") == "fourier":
        raise InputError(f"{unet_dir}: time_embedding_type fourier takes a noise level, not a step: use "
                         "external.kind edm")
    if config.get("num_class_embeds") is not None:
        raise InputError(f"{unet_dir}: a class-conditional model (num_class_embeds) needs labels: wrap it with "
                         "external.kind python")
    if not config.get("sample_size"):
        raise InputError(f"{unet_dir}: no sample_size in config.json: set it to the model's resolution")
    if config.get("out_channels", 3) != config.get("in_channels", 3):
        raise InputError(f"{unet_dir}: out_channels {config.get('out_channels')} != in_channels "
                         f"{config.get('in_channels')} (a learned variance?): wrap it with external.kind python")
    weights = _load_weights(unet_dir)
    try:
        model = UNet2DModel.from_config(config)
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise InputError(f"{unet_dir}: the weights do not fit the model's config ({str(err).splitlines()[0][:120]})"
                         ) from None
    from .device import resolve_device

    model = model.to(resolve_device(device)).eval()
    size = config.get("sample_size")
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(config.get("in_channels", 3)), *size)

    def run(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return model(x, step).sample

    return DiscreteScore(run, shape, DiscreteTime(scheduler_alpha_bar(sched)),
                         sched.get("prediction_type", "epsilon"), batch_size, device)


# ----------------------------------------------------------------------------- EDM
def edm_coefficients(sigma: float, preconditioning: str, sigma_data: float = 0.5, beta_d: float = 19.9,
                     beta_min: float = 0.1, M: int = 1000) -> tuple[float, float, float, float]:
    """(c_skip, c_out, c_in, c_noise) of EDM's preconditionings (Karras et al. 2022, Table 1)
    at noise level sigma: ``D(x) = c_skip x + c_out F(c_in x, c_noise)``."""
    if preconditioning == "vp":
        t_vp = (math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(sigma**2)) - beta_min) / beta_d
        return 1.0, -sigma, 1.0 / math.sqrt(sigma**2 + 1), (M - 1) * t_vp
    if preconditioning == "ve":
        return 1.0, sigma, 1.0, math.log(0.5 * sigma)
    if preconditioning == "edm":
        s2 = sigma**2 + sigma_data**2
        return sigma_data**2 / s2, sigma * sigma_data / math.sqrt(s2), 1.0 / math.sqrt(s2), 0.25 * math.log(sigma)
    raise InputError(f"EDM preconditioning {preconditioning!r} is not one of {PRECONDITIONINGS}")


class DenoiserScore:
    """The OU score of an EDM-style denoiser in the variance-exploding scale: for OU time t,
    ``x_VE = e^t x``, ``sigma = sqrt(e^{2t} - 1)`` and ``F = e^t (D(x_VE; sigma) - x_VE) / sigma^2``.
    ``net`` is the raw network ``F(x_in, c_noise)`` (with ``preconditioning`` vp, ve or edm) or
    the denoiser ``D(x, sigma)`` itself (``denoiser``); both on (B, *shape) and (B,)."""

    def __init__(self, net: Callable, shape: tuple[int, ...], preconditioning: str = "edm",
                 sigma_data: float = 0.5, batch_size: int = 256, device: str = "cpu"):
        if preconditioning not in PRECONDITIONINGS:
            raise InputError(f"EDM preconditioning {preconditioning!r} is not one of {PRECONDITIONINGS}")
        from .device import resolve_device

        self.net, self.shape, self.preconditioning, self.sigma_data = net, tuple(shape), preconditioning, sigma_data
        self.batch_size, self.device = int(batch_size), resolve_device(device)

    def denoise(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(y; sigma) for (B, *shape) states in the VE scale."""
        import torch

        noise = torch.full((y.shape[0],), sigma, dtype=y.dtype, device=y.device)
        if self.preconditioning == "denoiser":
            return self.net(y, noise)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.preconditioning, self.sigma_data)
        return c_skip * y + c_out * self.net(c_in * y, torch.full_like(noise, c_noise))

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        from .networks import evaluate_in_batches

        scale, sigma2 = math.exp(t), math.expm1(2 * t)
        sigma = math.sqrt(sigma2)

        def one_batch(xb: torch.Tensor) -> torch.Tensor:
            y = (xb * scale).view(-1, *self.shape)
            return (scale * (self.denoise(y, sigma) - y) / sigma2).reshape(xb.shape[0], -1)

        return evaluate_in_batches(one_batch, x, self.batch_size, self.device, dtype=None)  # the states' dtype


# ----------------------------------------------------------------------------- entry points
def load_entry_point(spec: str) -> Callable:
    """The callable named by ``module:function`` or ``path/to/file.py:function``."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise InputError(f"external.entry {spec!r}: give module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            name = f"diffusion_regimes_external_{path.stem}"
            loader = importlib.util.spec_from_file_location(name, path)
            if loader is None or not path.exists():
                raise FileNotFoundError(path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except Exception as err:  # noqa: BLE001 - user code may raise anything while it is imported
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"external.entry {spec!r}: cannot load it ({type(err).__name__}: {first})") from None


def _call_entry_point(cfg: dict):
    """The entry point called with the block's options (one line if it raises)."""
    fn = load_entry_point(cfg["entry"])
    try:
        return fn(**cfg.get("options", {}))
    except Exception as err:  # noqa: BLE001 - user code may raise anything
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"external.entry {cfg['entry']!r} failed with options {cfg.get('options', {})} "
                         f"({type(err).__name__}: {first})") from None


def external_score(cfg: dict, d: int, device: str = "auto", batch_size: int = 256):
    """The score (OU time, the project's interface) of the config's ``external`` block, for data
    of dimension d, evaluated ``batch_size`` rows at a time on ``device``."""
    kind = cfg["kind"]
    if kind == "diffusers":
        score = load_diffusers(cfg["path"], device, batch_size)
        shape = score.shape
    elif kind == "edm":
        net = _call_entry_point(cfg)
        shape = tuple(cfg["shape"])
        score = DenoiserScore(net, shape, cfg.get("preconditioning", "edm"), cfg.get("sigma_data", 0.5),
                              batch_size, device)
    elif kind == "python":
        made = _call_entry_point(cfg)
        if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0])):
            raise InputError(f"external.entry {cfg['entry']!r} must return (score, shape), a callable "
                             f"score(x, t) and the shape of one sample; it returned a {type(made).__name__}")
        score, shape = made
    else:
        raise InputError(f"external.kind {kind!r} is not one of diffusers, edm, python")
    if math.prod(shape) != d:
        raise InputError(f"the external model takes samples of shape {tuple(shape)}, but the data have d = {d}: "
                         "make the dataset block give the model's resolution and channels")
    return score
