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
The files a model reads and its schedule's times (torch-free: the workflow lists them and
validation checks the sampler's range) belong to the score kind,
:mod:`diffusion_regimes.scoremodels.external`; this module converts the loaded networks.
Every converted network has the interface of
:class:`diffusion_regimes.networks.BatchedNetworkScore` (valid OU times, batches on a
device, the per-sample denoising loss), except a ``python`` entry point's own callable.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import InputError
from .io import one_line, out_of_memory
from .networks import BatchedNetworkScore, eps_to_score
from .predictions import preconditioning, prediction_type
from .scoremodels.external import (  # noqa: F401 - the schedule and folder helpers, re-exported
    BETA_SCHEDULES,
    DiscreteTime,
    diffusers_folders,
    diffusers_time_range,
    external_inputs,
    read_diffusers_configs,
    scheduler_alpha_bar,
    weights_file,
)


def prediction_to_score(pred: torch.Tensor, x: torch.Tensor, t: float, prediction: str) -> torch.Tensor:
    """The score at OU time t of states x from a network's prediction (same shape as x): the
    prediction type (:mod:`diffusion_regimes.predictions`) gives the noise eps of
    ``x = alpha x0 + s eps``, whose score is :func:`diffusion_regimes.networks.eps_to_score`."""
    return eps_to_score(prediction_type(prediction).to_eps(pred, x, t), t)


class DiscreteScore(BatchedNetworkScore):
    """The score of a network of a discrete schedule: ``model(x: (B, *shape), step: (B,)) ->
    prediction``, evaluated ``batch_size`` rows at a time on ``device``; valid between the OU
    times of the schedule's first and last steps. An OU time between steps is passed as the
    fractional step that interpolates ``t_k`` linearly."""

    def __init__(self, model: Callable, shape: tuple[int, ...], clock: DiscreteTime, prediction: str,
                 batch_size: int = 256, device: str = "cpu"):
        self.prediction = prediction_type(prediction)
        super().__init__(batch_size, device)
        self.model, self.shape, self.clock = model, tuple(shape), clock
        self.t_min, self.t_max = float(clock.times[0]), clock.t_max

    def predict_eps(self, xb: torch.Tensor, t: float) -> torch.Tensor:
        k = torch.full((xb.shape[0],), self.clock.step(t), dtype=torch.float32, device=self.device)
        pred = self.model(xb.view(-1, *self.shape), k).float().reshape(xb.shape[0], -1)
        return self.prediction.to_eps(pred, xb, t)


# ----------------------------------------------------------------------------- diffusers
def _load_weights(folder: Path) -> dict:
    """The state dict of a diffusers folder: safetensors, or a .bin read with weights_only=True."""
    path = weights_file(folder)
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
    unet_dir, config, sched = read_diffusers_configs(path)
    weights = _load_weights(unet_dir)
    try:
        model = UNet2DModel.from_config(config)
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError, KeyError, MemoryError) as err:
        if out_of_memory(err):
            raise InputError(f"{unet_dir}: out of memory building the model from its config.json "
                             f"({one_line(err)}); use a machine with more memory") from None
        raise InputError(f"{unet_dir}: the weights do not fit the model's config ({one_line(err, 120)})") from None
    from .device import resolve_device

    model = model.to(resolve_device(device)).eval()
    size = config.get("sample_size")
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(config.get("in_channels", 3)), *size)

    def run(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return model(x, step).sample

    score = DiscreteScore(run, shape, DiscreteTime(scheduler_alpha_bar(sched)),
                          sched.get("prediction_type", "epsilon"), batch_size, device)
    score.network = model
    return score


# ----------------------------------------------------------------------------- EDM
def edm_coefficients(sigma: float, preconditioning_name: str, sigma_data: float = 0.5) -> tuple[float, float, float,
                                                                                               float]:
    """(c_skip, c_out, c_in, c_noise) of EDM's preconditionings (Karras et al. 2022, Table 1)
    at noise level sigma: ``D(x) = c_skip x + c_out F(c_in x, c_noise)``
    (:mod:`diffusion_regimes.predictions`)."""
    return preconditioning(preconditioning_name, sigma_data).coefficients(sigma)


class DenoiserScore(BatchedNetworkScore):
    """The OU score of an EDM-style denoiser in the variance-exploding scale: for OU time t,
    ``x_VE = e^t x``, ``sigma = sqrt(e^{2t} - 1)`` and ``F = e^t (D(x_VE; sigma) - x_VE) / sigma^2``.
    ``net`` is the raw network ``F(x_in, c_noise)`` (with ``preconditioning`` vp, ve or edm) or
    the denoiser ``D(x, sigma)`` itself (``denoiser``); both on (B, *shape) and (B,). Evaluated
    in the states' dtype."""

    dtype = None

    def __init__(self, net: Callable, shape: tuple[int, ...], preconditioning_name: str = "edm",
                 sigma_data: float = 0.5, batch_size: int = 256, device: str = "cpu"):
        self.precond = preconditioning(preconditioning_name, sigma_data)
        super().__init__(batch_size, device)
        self.net, self.shape = net, tuple(shape)

    def denoise(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(y; sigma) for (B, *shape) states in the VE scale."""
        noise = torch.full((y.shape[0],), sigma, dtype=y.dtype, device=y.device)
        if not self.precond.wraps_raw_network:
            return self.net(y, noise)
        c_skip, c_out, c_in, c_noise = self.precond.coefficients(sigma)
        return c_skip * y + c_out * self.net(c_in * y, torch.full_like(noise, c_noise))

    def predict_score(self, xb: torch.Tensor, t: float) -> torch.Tensor:
        scale, sigma2 = math.exp(t), math.expm1(2 * t)
        y = (xb * scale).view(-1, *self.shape)
        return (scale * (self.denoise(y, math.sqrt(sigma2)) - y) / sigma2).reshape(xb.shape[0], -1)


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


def describe_external(cfg: dict, d: int, sampler: dict, dataset: dict) -> str:
    """Text description of an ``external`` block's model (loaded on the CPU): what identifies
    it, the shape of one sample against the data's d, its parameters, the OU times it is
    valid on against the sampler's grid, and the pixel convention the data will be given in."""
    from .models import count_parameters
    from .scoremodels.external import model_provenance, sampler_range

    found = model_provenance(cfg)
    score = external_score(cfg, d, "cpu")
    shape = tuple(getattr(score, "shape", ()) or ())
    net = getattr(score, "network", None) or getattr(score, "net", None)
    lo, hi = sampler_range(sampler)
    t_min, t_max = float(getattr(score, "t_min", 0.0)), float(getattr(score, "t_max", math.inf))
    lines = [f"model: {found['id']}",
             f"sample shape {shape} (d = {math.prod(shape) if shape else '?'}; the dataset block gives d = {d})"]
    if isinstance(net, torch.nn.Module):
        lines.append(f"parameters: {count_parameters(net):,}")
    if cfg.get("kind") == "diffusers":
        sched = found["schedule"]
        lines.append(f"prediction {found['prediction_type']}, schedule {sched['class']} {sched['beta_schedule']} "
                     f"betas {sched['beta_start']:g} ... {sched['beta_end']:g} over "
                     f"{sched['num_train_timesteps']} steps")
    lines.append(f"valid OU times [{t_min:.4g}, {t_max:.4g}]; the network sampler's grid [{lo:.4g}, {hi:.4g}]"
                 + ("" if t_min * (1 - 1e-6) <= lo and hi <= t_max + 1e-9 else "  [outside: set T and t_end inside]"))
    if "pixel_range" in dataset or "centre" in dataset:
        lines.append(f"data given to it: pixels in {list(dataset.get('pixel_range', [0, 1]))}, "
                     f"{'centred' if dataset.get('centre', True) else 'uncentred'} (dataset.pixel_range, "
                     "dataset.centre: they must be what the model was trained on; the sanity check tests it)")
    return "\n".join(lines)
