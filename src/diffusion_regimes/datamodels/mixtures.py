"""Gaussian mixtures, the exactly solvable data models of the theory.

- ``gaussian_mixture``: ``1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)`` with
  ``m = mu_tilde * (1, ..., 1)`` (so ``|m|^2 = mu_tilde^2 d``), exactly balanced; the
  class of a sample is the sign of its projection on m.
- ``hierarchical_mixture``: four Gaussians at ``±mu_tilde u ± mu_tilde2 v`` (u, v
  orthogonal): two super-classes, each split in two; class ``2 s + c``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..entropy import collapse_level
from ..schedule import speciation_time
from ..scores import GaussianMixtureScore, MixtureScore
from ..theory import (
    alpha,
    crossing_time,
    gm_collapse_time,
    gm_excess_entropy,
    gm_lambda,
    gm_phi,
    hierarchical_lambdas,
    hierarchical_phi,
)
from . import DataModel, Subset, register


def gaussian_mixture(d: int, n: int, mu_tilde: float, sigma: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """n points (n, d) float32 of the symmetric two-Gaussian mixture and labels (n,)
    (1 for the +m class). Exactly n//2 points in class 1, in random order."""
    labels = torch.zeros(n, dtype=torch.int64)
    labels[: n // 2] = 1
    labels = labels[torch.randperm(n, generator=generator)]
    m = torch.full((d,), float(mu_tilde))
    x = (2 * labels[:, None] - 1).float() * m + sigma * torch.randn(n, d, generator=generator)
    return x, labels.numpy()


def hierarchical_centres(d: int, mu_tilde: float, mu_tilde2: float) -> torch.Tensor:
    """The four centres (4, d) float32 of the hierarchical mixture, class k = 2 s + c:
    ``(2s - 1) mu_tilde u + (2c - 1) mu_tilde2 v`` with u = (1, ..., 1) and v = (1, -1, 1, ...)
    (orthogonal for even d; |u| = |v| = sqrt(d))."""
    u = torch.ones(d)
    v = torch.ones(d)
    v[1::2] = -1.0
    s = torch.tensor([-1.0, -1.0, 1.0, 1.0])[:, None]
    c = torch.tensor([-1.0, 1.0, -1.0, 1.0])[:, None]
    return s * mu_tilde * u + c * mu_tilde2 * v


def hierarchical_mixture(d: int, n: int, mu_tilde: float, mu_tilde2: float, sigma: float,
                         generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """n points (n, d) float32 of the four-Gaussian hierarchical mixture and labels (n,)
    in 0..3 (super-class = label // 2, class within it = label % 2), n // 4 per class
    (the remainder in the first classes), in random order."""
    labels = (torch.arange(n) % 4)[torch.randperm(n, generator=generator)]
    centres = hierarchical_centres(d, mu_tilde, mu_tilde2)
    x = centres[labels] + sigma * torch.randn(n, d, generator=generator)
    return x, labels.numpy()


def _mixture_collapse(t: np.ndarray, n: int, d: int, sigma: float, classes: int) -> tuple[np.ndarray, dict]:
    """Closed-form f(t) of a mixture of ``classes`` Gaussians with class std sigma, its zero t_C
    (d -> infinity), the finite-d t_C that keeps the classes' mixing entropy, and the crossing
    of the entropy's finite-d level (:func:`diffusion_regimes.entropy.collapse_level`)."""
    f = gm_excess_entropy(t, n, d, sigma)
    return f, {"t_C": gm_collapse_time(n, d, sigma), "t_C_finite_d": gm_collapse_time(n, d, sigma, classes),
               "t_C_at_level": crossing_time(t, f, collapse_level(d)), "alpha": alpha(n, d)}


@register
class GaussianMixture(DataModel):
    """The symmetric two-Gaussian mixture (``d``, ``n``, ``mu_tilde``, ``sigma``)."""

    name = "gaussian_mixture"
    kind = "solvable"

    @classmethod
    def sample(cls, dataset: dict, generator) -> Subset:
        x, labels = gaussian_mixture(dataset["d"], dataset["n"], dataset["mu_tilde"], dataset["sigma"], generator)
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": ["-m", "+m"], "source": cls.name,
                "mu_tilde": dataset["mu_tilde"], "sigma": dataset["sigma"], "m_direction": "ones"}
        return Subset(x, labels, np.arange(len(labels), dtype=np.int64), meta)

    def centre(self) -> torch.Tensor:
        """The centre m (d,) of the +m class."""
        return torch.full((int(self.meta["d"]),), float(self.meta["mu_tilde"]))

    def exact_score(self) -> GaussianMixtureScore:
        return GaussianMixtureScore(self.centre(), self.meta["sigma"])

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.centre() > 0).to(torch.int64)

    def symmetry_direction(self) -> torch.Tensor:
        """The direction of the order parameter ``q = x . m / sqrt(d)``: m / sqrt(d)."""
        return self.centre() / math.sqrt(self.meta["d"])

    def theory(self, t: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        n, d, mu, sigma = self.meta["n"], self.meta["d"], self.meta["mu_tilde"], self.meta["sigma"]
        f, results = _mixture_collapse(t, n, d, sigma, 2)
        lam = gm_lambda(d, mu, sigma)
        results.update({"Lambda_population": lam, "t_S_population": speciation_time(lam)})
        return {"phi": gm_phi(t, mu * math.sqrt(d), sigma), "f": f}, results


@register
class HierarchicalMixture(DataModel):
    """Four Gaussians ``±mu_tilde u ± mu_tilde2 v`` (``d`` even, ``n``, ``mu_tilde``,
    ``mu_tilde2``, ``sigma``): speciation into super-classes at 1/2 log Lambda_1, then into
    classes at 1/2 log Lambda_2."""

    name = "hierarchical_mixture"
    kind = "solvable"

    @classmethod
    def sample(cls, dataset: dict, generator) -> Subset:
        x, labels = hierarchical_mixture(dataset["d"], dataset["n"], dataset["mu_tilde"], dataset["mu_tilde2"],
                                         dataset["sigma"], generator)
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": ["--", "-+", "+-", "++"], "source": cls.name,
                "mu_tilde": dataset["mu_tilde"], "mu_tilde2": dataset["mu_tilde2"], "sigma": dataset["sigma"]}
        return Subset(x, labels, np.arange(len(labels), dtype=np.int64), meta)

    def _score(self) -> MixtureScore:
        return MixtureScore(hierarchical_centres(self.meta["d"], self.meta["mu_tilde"], self.meta["mu_tilde2"]),
                            self.meta["sigma"])

    def exact_score(self) -> MixtureScore:
        return self._score()

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self._score().classify(x)

    def agreement_levels(self, trunk: np.ndarray, clone: np.ndarray) -> dict[str, np.ndarray]:
        """Agreement on the super-class (``super``) and on the class within it (``sub``)."""
        return {"super": clone // 2 == trunk[None] // 2, "sub": clone % 2 == trunk[None] % 2}

    def theory(self, t: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        n, d, mu, mu2, sigma = (self.meta[k] for k in ("n", "d", "mu_tilde", "mu_tilde2", "sigma"))
        f, results = _mixture_collapse(t, n, d, sigma, 4)
        lam, lam2, _ = hierarchical_lambdas(d, mu, mu2, sigma)
        phi_super, phi_sub, phi = hierarchical_phi(t, d, mu, mu2, sigma)
        results.update({"Lambda2_population": lam2, "t_S2_population": speciation_time(lam2),
                        "t_S_sub_population": speciation_time(lam2),
                        "t_S_super_population": speciation_time(lam), "Lambda_population": lam,
                        "t_S_population": speciation_time(lam)})
        return {"phi": phi, "f": f, "phi_super": phi_super, "phi_sub": phi_sub}, results
