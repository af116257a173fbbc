"""Classes that differ in their covariance: speciation without mean separation
(Achilli, Benedetti, Biroli & Mezard, "Theory of speciation transitions in diffusion
models with general class structure", 2026).

``covariance_mixture``: K Gaussian classes ``N(mu_c u, sigma_c^2 I_d)`` with weights pi_c,
``u = (1, ..., 1)`` (so ``|mean|^2 = mu_c^2 d``, as in ``gaussian_mixture``); with every
``mu_c = 0`` the classes share their mean and differ only in their variance.

Exact quantities, at every d (no large-d approximation):

- under the forward process class c is ``N(mu_c u e^{-t}, Gamma_c I)``,
  ``Gamma_c = sigma_c^2 e^{-2t} + Delta_t``: the exact score is that of a Gaussian mixture
  (:class:`CovarianceMixtureScore`);
- the class posterior depends on x only through ``q = x.u / sqrt(d)`` and
  ``s = |x|^2 - q^2``, with ``q | c ~ N(mu_c sqrt(d) e^{-t}, Gamma_c)`` and
  ``s | c ~ Gamma_c chi2_{d-1}``, independent: ``phi(t) = E[sum_c P(c | x_t)^2]`` is a
  two-dimensional quadrature (:func:`posterior_moments`): Gauss-Hermite in q, and a fine
  grid in ``log s`` weighted by the chi-square density in s.

Speciation of two classes a, b. Their log-likelihood ratio at x_t is, under class a,
``(d/2)(D/Gamma_b - log(1 + D/Gamma_b)) + (d/2)(D/Gamma_b) sqrt(2/d) z`` plus the mean term
(``D = Gamma_a - Gamma_b = delta e^{-2t}``, ``delta = sigma_a^2 - sigma_b^2``, z ~ N(0, 1),
from ``|x|^2/d = Gamma_a (1 + sqrt(2/d) z)``). When ``D/Gamma`` is small (large d at the
times that matter) the ratio tends to ``N(+-kappa^2/2, kappa^2)`` with

    kappa^2 = (d/2) delta^2 e^{-4t} / Gbar^2 + (mu_a - mu_b)^2 d e^{-2t} / Gbar,
    Gbar = (Gamma_a + Gamma_b) / 2,

the law of the mean-separated mixture, whose kappa = 2 at ``t_S`` gives ``phi = PHI_AT_T_S``.
With equal means, kappa = 2 at ``t_S = 1/2 log(|delta| sqrt(d/8) - (sbar - 1))``,
``sbar = (sigma_a^2 + sigma_b^2)/2``: ``~ 1/4 log(d delta^2 / 8)`` at large d, while
``Lambda = sum_c pi_c sigma_c^2`` stays O(1) and 1/2 log Lambda predicts no regime. The limit
needs ``D/Gbar = kappa sqrt(2/d)`` small at t_S (2.8/sqrt(d): 0.35 at d = 64) and
``t_S > 0``; at finite d the exact phi's crossing of that level moves away from it by
O(1/sqrt(d)) (the chi-square's skewness), which :func:`crossing` measures.

Several classes speciate one after another: the splits form a tree, built from the pairs'
closed-form times (:func:`splits`: a group not yet split acts as one class of its weighted
mean variance and mean); each split (A | B) is measured by the agreement of two clones that
both end in A u B, ``phi_{A|B} = E[P_A^2 + P_B^2] / E[(P_A + P_B)^2]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..entropy import collapse_level
from ..schedule import speciation_time
from ..theory import (
    alpha,
    cov_class_parameters,
    cov_collapse_time,
    cov_crossing,
    cov_excess_entropy,
    cov_phi,
    cov_split_name,
    cov_splits,
    crossing_time,
)
from . import DataModel, Subset, register


def covariance_mixture(d: int, n: int, variances, means, weights, generator: torch.Generator
                       ) -> tuple[torch.Tensor, np.ndarray]:
    """n points (n, d) float32 and labels (n,): ``round(n pi_c)`` points of class c (the
    remainder to the first classes), in random order."""
    K = len(variances)
    counts = np.floor(n * np.asarray(weights)).astype(int)
    counts[: n - counts.sum()] += 1
    labels = torch.as_tensor(np.repeat(np.arange(K), counts))[torch.randperm(n, generator=generator)]
    std = torch.as_tensor(np.sqrt(variances), dtype=torch.float32)[labels]
    mu = torch.as_tensor(means, dtype=torch.float32)[labels]
    x = mu[:, None] + std[:, None] * torch.randn(n, d, generator=generator)
    return x, labels.numpy()


class CovarianceMixtureScore:
    """Exact score of ``sum_c pi_c N(mu_c u e^{-t}, Gamma_c I)``:
    ``F = sum_c w_c(x) (mu_c e^{-t} u - x) / Gamma_c``, w the class posterior. The logits
    are computed in float64 (they are O(d) and differ by O(1))."""

    def __init__(self, variances, means, weights):
        self.var = torch.as_tensor(variances, dtype=torch.float64)
        self.mu = torch.as_tensor(means, dtype=torch.float64)
        self.log_w = torch.log(torch.as_tensor(weights, dtype=torch.float64))

    def _gamma(self, t: float) -> torch.Tensor:
        return self.var * math.exp(-2 * t) + (-math.expm1(-2 * t))

    def logits(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log pi_c + log N(x; mu_c u e^{-t}, Gamma_c I)`` (B, K), float64, differentiable.
        The reductions |x|^2 and x.u are taken in x's dtype (float32: blocked sums, relative
        error ~1e-6, i.e. ~0.02 in a log-likelihood ratio at d = 16 384, far below its O(1)
        spread) and combined in float64; no float64 copy of x is made."""
        g = self._gamma(t)
        d = x.shape[1]
        m = self.mu * math.exp(-t)
        sq = torch.linalg.vector_norm(x, dim=1, keepdim=True).to(torch.float64) ** 2
        dist = sq + d * m * m  # |x - m_c u|^2
        if bool((self.mu != 0).any()):
            dist = dist - 2 * x.sum(1, keepdim=True).to(torch.float64) * m
        return self.log_w - 0.5 * d * torch.log(2 * math.pi * g) - dist / (2 * g)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``F = a - b x`` with ``a = sum_c w_c mu_c e^{-t} / Gamma_c``, ``b = sum_c w_c / Gamma_c``
        (per row), applied in x's dtype."""
        g = self._gamma(t)
        w = torch.softmax(self.logits(x, t), 1) / g  # (B, K)
        a = (w * self.mu * math.exp(-t)).sum(1, keepdim=True).to(x.dtype)
        b = w.sum(1, keepdim=True).to(x.dtype)
        return torch.addcmul(a, b, x, value=-1.0)

    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log P_t(x)`` (B,), differentiable (for tests against autograd)."""
        return torch.logsumexp(self.logits(x, t), 1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class (B,) int64 of final samples: the most likely class at t = 0."""
        return self.logits(x, 0.0).argmax(1)


@register
class CovarianceMixture(DataModel):
    """K Gaussian classes ``N(mu_c u, sigma_c^2 I)`` (``d``, ``n``, ``variances``, ``means``,
    ``weights``): speciation by covariance, at ``~1/4 log d``, one split after another."""

    name = "covariance_mixture"
    kind = "solvable"
    speciation_rule = "kappa = 2 of the first split (covariance_mixture)"

    @classmethod
    def sample(cls, dataset: dict, generator) -> Subset:
        var, means, weights = cov_class_parameters(dataset)
        x, labels = covariance_mixture(dataset["d"], dataset["n"], var, means, weights, generator)
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": [f"c{k}" for k in range(len(var))],
                "source": cls.name, "variances": var.tolist(), "means": means.tolist(), "weights": weights.tolist()}
        return Subset(x, labels, np.arange(len(labels), dtype=np.int64), meta)

    def _params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return cov_class_parameters(self.meta)

    def exact_score(self) -> CovarianceMixtureScore:
        return CovarianceMixtureScore(*self._params())

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.exact_score().classify(x)

    def _splits(self):
        return cov_splits(int(self.meta["d"]), *self._params())

    def levels(self) -> list[tuple[tuple[int, ...], tuple[int, ...], float]]:
        """The splits measured as levels of agreement: every split when there are three
        classes or more (with two, the one split is phi itself)."""
        found = self._splits()
        return found if len(found) > 1 else []

    def agreement_levels(self, trunk: np.ndarray, clone: np.ndarray) -> dict[str, np.ndarray]:
        """Per split (A | B): float (K, P), 1 where trunk and clone end on the same side, 0
        on opposite sides, NaN where either ends outside A u B (not counted)."""
        out = {}
        for A, B, _ in self.levels():
            side_t = np.where(np.isin(trunk, A), 0, np.where(np.isin(trunk, B), 1, -1))[None]
            side_c = np.where(np.isin(clone, A), 0, np.where(np.isin(clone, B), 1, -1))
            inside = (side_t >= 0) & (side_c >= 0)
            out[cov_split_name(A, B)] = np.where(inside, (side_t == side_c).astype(np.float32), np.nan)
        return out

    def speciation_time(self, Lambda: float) -> float:
        """The first split's closed-form t_S (kappa = 2), not 1/2 log Lambda."""
        return self._splits()[0][2]

    def theory(self, t: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        var, means, weights = self._params()
        n, d = int(self.meta["n"]), int(self.meta["d"])
        levels = self.levels()
        moments = cov_phi(t, d, var, means, weights, [(A, B) for A, B, _ in levels])
        lam = float((weights * var).sum() + d * (weights * (means - (weights * means).sum()) ** 2).sum())
        first = self._splits()[0]
        results = {"Lambda_population": lam, "t_S_half_log_Lambda": speciation_time(lam),
                   "t_S_population": first[2], "t_S_exact_crossing": cov_crossing(d, var, means, weights),
                   "t_C": cov_collapse_time(n, d, var, weights), "alpha": alpha(n, d),
                   "t_C_at_level": float("nan")}
        f = cov_excess_entropy(t, n, d, var, weights)
        results["t_C_at_level"] = crossing_time(t, f, collapse_level(d))
        columns = {"phi": moments["phi"], "f": f}
        for A, B, t_s in levels:
            name = cov_split_name(A, B)
            columns[f"phi_{name}"] = moments[name]
            results[f"t_S_{name}_population"] = t_s
            results[f"t_S_{name}_exact_crossing"] = cov_crossing(d, var, means, weights, (A, B))
        return columns, results
