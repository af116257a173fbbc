"""Noise-predicting networks behind the project's score interface.

:class:`EpsilonModel` wraps a raw network ``net(x: (B, *shape), c_noise: (B,)) -> eps``
and owns its noise convention, as the preconditioning wrappers of EDM
(``VPPrecond``) and k-diffusion do:

- conditioning: ``c_noise = time_scale * t`` with t the OU time; ``time_scale`` is
  saved in the checkpoint beside the weights;
- training loss (denoising score matching, epsilon prediction):
  ``|eps_theta(x_t, t) - eps|^2`` with ``x_t = a e^{-t} + sqrt(Delta_t) eps``
  (:func:`diffusion_regimes.schedule.forward_noise`), the one per-sample loss of
  :func:`diffusion_regimes.predictions.denoising_loss` (batch-averaged for training);
- score: ``F(x, t) = -eps_theta(x, t) / sqrt(Delta_t)``.

:class:`BatchedNetworkScore` is the interface every network shares, native or from
elsewhere (:mod:`diffusion_regimes.external`): the OU times it is valid on, its score
and its noise prediction evaluated on CPU states a batch at a time on a device, and the
per-sample denoising loss (:meth:`BatchedNetworkScore.denoising_loss`).
:class:`NetworkScore` is the native one. Checkpoints (:func:`save_network`, :func:`load_network`)
hold the raw network's ``state_dict`` and a ``network`` record: ``arch``,
``config``, ``shape``, ``prediction`` and ``time_scale``.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from .device import autocast, resolve_channels_last, resolve_device, resolve_precision, to_layout
from .errors import InputError
from .io import load_checkpoint, save_checkpoint
from .models import build_network
from .predictions import EpsilonPrediction, denoising_loss
from .schedule import delta, forward_noise

#: time scaling of the default networks: 1000 DDPM steps span OU times in [0, 5], so the
#: sinusoidal embedding sees c_noise in [0, 1000] (as a DDPM step index would be)
DEFAULT_TIME_SCALE = 200.0


class EpsilonModel(nn.Module):
    """Epsilon prediction in OU time around a raw network; ``shape`` is one sample's
    shape as the raw network takes it ((C, H, W) for images, (d,) for vectors)."""

    prediction = "eps"

    def __init__(self, net: nn.Module, shape: tuple[int, ...], time_scale: float = DEFAULT_TIME_SCALE):
        super().__init__()
        self.net = net
        self.shape = tuple(int(s) for s in shape)
        self.time_scale = float(time_scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor, precision: str = "fp32", channels_last: bool = False,
                net: nn.Module | None = None) -> torch.Tensor:
        """Predicted noise (B, *shape) for states x (B, d) at OU times t (B,); ``net``
        replaces the raw network (a compiled copy of it, for training)."""
        with autocast(x.device, precision):
            return (self.net if net is None else net)(to_layout(x.view(-1, *self.shape), channels_last),
                                                       self.time_scale * t.float())

    def loss(self, a: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, precision: str = "fp32",
             channels_last: bool = False, net: nn.Module | None = None, reduction: str = "mean") -> torch.Tensor:
        """Denoising loss ``|eps_theta(x_t, t) - eps|^2`` (:func:`denoising_loss`) for clean data
        a (B, d), OU times t (B,) and standard normal noise eps (B, d): the batch mean (training),
        or per sample (B,) with ``reduction="none"``."""
        pred = self(forward_noise(a, t, eps), t, precision, channels_last, net)
        return EpsilonPrediction.loss(pred, a, eps, t, reduction)

    def record(self, arch: str, config: dict) -> dict:
        """The ``network`` record of a checkpoint."""
        return {"arch": arch, "config": config, "shape": list(self.shape), "prediction": self.prediction,
                "time_scale": self.time_scale}


def eps_to_score(eps: torch.Tensor, t: float) -> torch.Tensor:
    """The score ``-eps / sqrt(Delta_t)`` at OU time t of a noise prediction (any shape)."""
    return eps * (-1.0 / math.sqrt(delta(t)))


def score_to_eps(score: torch.Tensor, t: float) -> torch.Tensor:
    """The noise ``-sqrt(Delta_t) F`` implied by a score at OU time t (the inverse map)."""
    return score * (-math.sqrt(delta(t)))


def predicted_noise(score, x: torch.Tensor, t: float) -> torch.Tensor:
    """The noise (B, d) a score model predicts at states x (B, d), OU time t: a network's own
    prediction (:meth:`BatchedNetworkScore.eps`), else :func:`score_to_eps` of any score."""
    eps = getattr(score, "eps", None)
    return eps(x, t) if eps is not None else score_to_eps(score(x, t), t)


def evaluate_in_batches(fn, x: torch.Tensor, batch_size: int, device: torch.device,
                        dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """``fn(xb) -> (b, d)`` on ``batch_size`` rows of the CPU states x (B, d) at a time, moved to
    ``device`` (and ``dtype``; None keeps x's), without gradients; the result in x's device and
    dtype. Device memory is bounded by the batch size whatever B."""
    out = torch.empty_like(x)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device, dtype or x.dtype, non_blocking=True)
            out[start:start + xb.shape[0]] = fn(xb).to(x.device, x.dtype)
    return out


class BatchedNetworkScore:
    """The interface of every network score, native or from elsewhere.

    States stay on the CPU; they go to ``device`` ``batch_size`` rows at a time, so device
    memory is bounded by the batch size whatever the number of trajectories. A subclass
    gives :meth:`predict_eps` or :meth:`predict_score` on one device batch (each defaults
    to the other through the eps <-> score maps) and may narrow ``t_min``, ``t_max``, the
    OU times it is valid on (a call outside them is refused with one line).
    """

    t_min: float = 0.0
    t_max: float = math.inf
    #: dtype the states are evaluated in (None: the states' own)
    dtype: torch.dtype | None = torch.float32

    def __init__(self, batch_size: int = 512, device: str = "cpu"):
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)

    def predict_eps(self, xb: torch.Tensor, t: float) -> torch.Tensor:
        """The predicted noise (b, d) of one batch of states on the device."""
        return score_to_eps(self.predict_score(xb, t), t)

    def predict_score(self, xb: torch.Tensor, t: float) -> torch.Tensor:
        """The score (b, d) of one batch of states on the device."""
        return eps_to_score(self.predict_eps(xb, t), t)

    def check_time(self, t: float) -> None:
        if t > self.t_max + 1e-9:
            raise InputError(f"OU time {t:.4g} is beyond the model's last step (t = {self.t_max:.4g}): "
                             "lower the network_sampler's T")
        if t < self.t_min * (1 - 1e-6):
            raise InputError(f"OU time {t:.4g} is before the model's first step (t = {self.t_min:.4g}): "
                             "raise the network_sampler's t_end")

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.check_time(t)
        return evaluate_in_batches(lambda xb: self.predict_score(xb, t), x, self.batch_size, self.device, self.dtype)

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The predicted noise (B, d) at CPU states x (B, d), OU time t (what the denoising
        loss measures)."""
        self.check_time(t)
        return evaluate_in_batches(lambda xb: self.predict_eps(xb, t), x, self.batch_size, self.device, self.dtype)

    def denoising_loss(self, a: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample denoising loss (B,) ``|eps_hat(x_t, t) - noise|^2 / d`` of clean points a
        (B, d) noised with ``noise`` (B, d) to OU time t (:func:`denoising_loss`)."""
        xt = forward_noise(a, torch.full((a.shape[0],), float(t)), noise)
        return denoising_loss(self.eps(xt, t), noise)


class NetworkScore(BatchedNetworkScore):
    """The score of an :class:`EpsilonModel` (a network trained here).

    ``precision`` ``bf16`` runs the forward pass under bf16 autocast (the score is
    returned in the states' dtype); channels_last is used on CUDA.
    """

    def __init__(self, model: EpsilonModel, batch_size: int = 512, device: str = "cpu", precision: str = "fp32"):
        super().__init__(batch_size, device)
        self.precision = resolve_precision(precision, self.device)  # warns of bf16 emulated on a CPU
        self.channels_last = resolve_channels_last(None, self.device)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt).eval()

    def predict_eps(self, xb: torch.Tensor, t: float, exact: bool = False) -> torch.Tensor:
        tb = torch.full((xb.shape[0],), float(t), dtype=torch.float32, device=xb.device)
        precision, layout = ("fp32", False) if exact else (self.precision, self.channels_last)
        return self.model(xb, tb, precision, layout).float().reshape(xb.shape[0], -1)

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The predicted noise (B, d) in float32 and the plain memory layout, whatever the
        sampler's precision: the loss measurements' noise prediction."""
        self.check_time(t)
        return evaluate_in_batches(lambda xb: self.predict_eps(xb, t, exact=True), x, self.batch_size, self.device,
                                   self.dtype)


def build_model(arch: str, config: dict, shape: tuple[int, ...],
                time_scale: float = DEFAULT_TIME_SCALE) -> EpsilonModel:
    """A freshly initialised :class:`EpsilonModel` (draws from torch's global generator:
    build it inside :func:`diffusion_regimes.seeding.global_torch_seed`)."""
    return EpsilonModel(build_network(arch, config, shape), shape, time_scale)


def save_network(model: EpsilonModel, arch: str, config: dict, metadata: dict, path: str | os.PathLike,
                 extra: dict | None = None) -> None:
    """Write a network checkpoint atomically (weights of the raw network on the CPU);
    ``extra`` entries (a weight snapshot's training state) are stored beside them."""
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    save_checkpoint({**(extra or {}), "state_dict": state, "network": model.record(arch, config),
                     "metadata": metadata}, path)


def load_network(path: str | os.PathLike, stage: str = "train") -> EpsilonModel:
    """Read a network checkpoint safely into an :class:`EpsilonModel` on the CPU, in eval mode.

    Raises :class:`InputError` (one line) for a missing, corrupt or unsafe file, a
    malformed ``network`` record or weights that do not fit it."""
    ckpt = load_checkpoint(path, required=("state_dict", "network"))
    rec, weights = ckpt["network"], ckpt["state_dict"]
    fix = f"delete it and re-run {stage}"
    try:
        arch, config, shape = rec["arch"], rec["config"], tuple(int(s) for s in rec["shape"])
        time_scale, prediction = float(rec["time_scale"]), rec["prediction"]
        if not isinstance(config, dict) or not shape or min(shape) < 1:
            raise TypeError("config must be a mapping and shape positive sizes")
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed network record ({type(err).__name__}: {err}); {fix}") from None
    if prediction != EpsilonModel.prediction:
        raise InputError(f"{path}: a {prediction!r}-prediction network; this loader reads epsilon prediction, {fix}")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError(f"{path}: state_dict is not a mapping of tensors; {fix}")
    try:
        model = build_model(arch, config, shape, time_scale)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: network record does not describe a buildable {arch!r} network "
                         f"({type(err).__name__}: {err}); {fix}") from None
    try:
        model.net.load_state_dict(weights)
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit the network it describes "
                         f"({str(err).splitlines()[0][:120]}); {fix}") from None
    return model.eval()
