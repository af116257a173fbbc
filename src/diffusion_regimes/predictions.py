"""What a network predicts, and how that becomes the score: one class per prediction type
and per EDM preconditioning (as k-diffusion's ``external.py`` and EDM's ``VPPrecond`` /
``VEPrecond`` / ``EDMPrecond`` are classes).

In OU time t a noised point is ``x = alpha a + s eps`` with ``alpha = e^{-t}``,
``s = sqrt(Delta_t)`` (:mod:`diffusion_regimes.schedule`). Each prediction type owns:

- :meth:`Prediction.to_eps`: the noise eps implied by a prediction at x (whose score is
  ``-eps / s``, :func:`diffusion_regimes.networks.eps_to_score`);
- :meth:`Prediction.target`: what the network is trained to output for clean a and noise
  eps, so that :meth:`Prediction.loss` is the per-sample denoising loss in its own units
  (:func:`denoising_loss`).

EDM preconditionings (Karras et al. 2022, Table 1) own their coefficients
``(c_skip, c_out, c_in, c_noise)`` at a noise level sigma of the variance-exploding
scale ``x_VE = e^t x``, ``sigma = sqrt(e^{2t} - 1)``.

torch is not imported here: the functions work on the tensors they are given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from .errors import InputError
from .schedule import delta

if TYPE_CHECKING:
    import torch


def denoising_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """The denoising loss ``|pred - target|^2`` averaged over coordinates: per sample (B,)
    float32 (``reduction="none"``), or over the whole batch (``"mean"``, a scalar: the
    training loss). ``pred`` (B, ...) in any float dtype; ``target`` of the same size."""
    sq = (pred.float() - target.reshape(pred.shape)) ** 2
    if reduction == "mean":
        return sq.mean()
    if reduction != "none":
        raise ValueError(f"reduction {reduction!r} is not 'none' or 'mean'")
    return sq.reshape(sq.shape[0], -1).mean(1)


# ----------------------------------------------------------------------------- prediction types
class Prediction:
    """A prediction type; ``name`` as diffusers' ``prediction_type`` spells it."""

    name: ClassVar[str]

    @staticmethod
    def to_eps(pred: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def target(a: torch.Tensor, eps: torch.Tensor, t: float) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def loss(cls, pred: torch.Tensor, a: torch.Tensor, eps: torch.Tensor, t: float,
             reduction: str = "none") -> torch.Tensor:
        """The denoising loss of a prediction for clean a and noise eps at OU time t."""
        return denoising_loss(pred, cls.target(a, eps, t), reduction)


class EpsilonPrediction(Prediction):
    """The noise itself: ``eps``."""

    name = "epsilon"

    @staticmethod
    def to_eps(pred, x, t):
        return pred

    @staticmethod
    def target(a, eps, t):
        return eps


class VPrediction(Prediction):
    """``v = alpha eps - s a`` (Salimans & Ho 2022): ``eps = alpha v + s x``."""

    name = "v_prediction"

    @staticmethod
    def to_eps(pred, x, t):
        return math.exp(-t) * pred + math.sqrt(delta(t)) * x

    @staticmethod
    def target(a, eps, t):
        return math.exp(-t) * eps - math.sqrt(delta(t)) * a


class SamplePrediction(Prediction):
    """The clean sample ``a`` (x0): ``eps = (x - alpha a) / s``."""

    name = "sample"

    @staticmethod
    def to_eps(pred, x, t):
        return (x - math.exp(-t) * pred) / math.sqrt(delta(t))

    @staticmethod
    def target(a, eps, t):
        return a


PREDICTIONS: dict[str, type[Prediction]] = {c.name: c for c in (EpsilonPrediction, VPrediction, SamplePrediction)}


def prediction_type(name: str) -> type[Prediction]:
    """The prediction class of a name (one line for an unknown one)."""
    if name not in PREDICTIONS:
        raise InputError(f"prediction type {name!r} is not one of {tuple(PREDICTIONS)}")
    return PREDICTIONS[name]


# ----------------------------------------------------------------------------- EDM preconditionings
class Preconditioning:
    """``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` around a raw network F."""

    name: ClassVar[str]
    #: whether the entry point is the raw network F (else it is the denoiser D itself)
    wraps_raw_network: ClassVar[bool] = True

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: float) -> tuple[float, float, float, float]:
        """(c_skip, c_out, c_in, c_noise) at noise level sigma."""
        raise NotImplementedError


class VPPrecond(Preconditioning):
    """EDM's VP: ``c_noise = (M - 1) t_VP(sigma)``."""

    name = "vp"
    beta_d, beta_min, M = 19.9, 0.1, 1000

    def coefficients(self, sigma):
        t_vp = (math.sqrt(self.beta_min**2 + 2 * self.beta_d * math.log1p(sigma**2)) - self.beta_min) / self.beta_d
        return 1.0, -sigma, 1.0 / math.sqrt(sigma**2 + 1), (self.M - 1) * t_vp


class VEPrecond(Preconditioning):
    """EDM's VE: ``c_noise = log(sigma / 2)``."""

    name = "ve"

    def coefficients(self, sigma):
        return 1.0, sigma, 1.0, math.log(0.5 * sigma)


class EDMPrecond(Preconditioning):
    """EDM's own: skip and output scalings with ``sigma_data``, ``c_noise = log(sigma) / 4``."""

    name = "edm"

    def coefficients(self, sigma):
        s2 = sigma**2 + self.sigma_data**2
        return (self.sigma_data**2 / s2, sigma * self.sigma_data / math.sqrt(s2), 1.0 / math.sqrt(s2),
                0.25 * math.log(sigma))


class DenoiserPrecond(Preconditioning):
    """No wrapper: the entry point returns ``D(x, sigma)`` itself."""

    name = "denoiser"
    wraps_raw_network = False


PRECONDITIONINGS: dict[str, type[Preconditioning]] = {
    c.name: c for c in (VPPrecond, VEPrecond, EDMPrecond, DenoiserPrecond)}


def preconditioning(name: str, sigma_data: float = 0.5) -> Preconditioning:
    """The preconditioning of a name (one line for an unknown one)."""
    if name not in PRECONDITIONINGS:
        raise InputError(f"EDM preconditioning {name!r} is not one of {tuple(PRECONDITIONINGS)}")
    return PRECONDITIONINGS[name](sigma_data)
