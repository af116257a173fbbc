"""The Curie–Weiss ferromagnet as a solvable data distribution (Biroli & Mézard,
"Generative diffusion in very large dimensions", 2023).

Spins ``a in {-1, +1}^d`` with

    P0(a) ∝ exp( (beta J / d) sum_{i<j} a_i a_j + h sum_i a_i )
          ∝ exp( beta J M^2 / (2 d) + h M ),   M = sum_i a_i,

(the two forms differ by the constant ``-beta J / 2``). The critical point is
``beta_c J = 1`` at ``h = 0``; below it the magnetisation per spin is 0, above
it ±m* with ``m* = tanh(beta J m*)``. The two "classes" are the signs of M.

- **Exact sampling** for any d: M is drawn from its exact law
  ``P(M) ∝ binom(d, (d + M)/2) exp(beta J M^2/(2d) + h M)``, then a uniformly
  random configuration with that M (the law is exchangeable).
- **Exact score** of ``P_t(x) = sum_a P0(a) N(x; a e^{-t}, Delta_t I)`` through
  the Hubbard–Stratonovich identity ``exp(beta J M^2/(2d)) ∝ int du
  exp(-d u^2/(2 beta J) + u M)``: given u the spins are independent in the
  field ``u + h + e^{-t} x_i / Delta_t``, so
  ``E[a_i | x] = <tanh(u + h + b_i)>_w``, ``b = e^{-t} x / Delta_t``, with the
  one-dimensional weight ``w(u) ∝ exp(-d u^2/(2 beta J) + sum_i log 2cosh(u + h + b_i))``
  and ``F = (e^{-t} E[a | x] - x) / Delta_t``. Every maximum of w lies in
  ``|u| <= beta J`` with width at least ``sqrt(beta J / d)``; the integral is a
  trapezoid sum on a uniform grid of spacing 0.75 of that width over
  ``[-beta J - 8 s, beta J + 8 s]`` (exponentially accurate for such smooth,
  fast-decaying integrands; checked against enumeration for d <= 12).
- **Spectrum**: the covariance matrix is ``(1 - <a>^2 - q) I + q 1 1^T`` with
  ``q = Cov(a_i, a_j)`` (i != j; ``<a> = 0`` at h = 0), so its top eigenvalue, along
  the uniform direction, is ``Lambda = Var(M) / d``.
- The score is defined for t > 0 (Delta_t = 0 at t = 0); samplers end at t_end > 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import gammaln, logsumexp

from ..schedule import delta, speciation_time
from . import DataModel, Subset, register


def magnetisation_law(d: int, beta: float, J: float = 1.0, h: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact law of M: (values (d+1,) int64 from -d to d by 2, probabilities (d+1,) float64)."""
    k = np.arange(d + 1)  # number of +1 spins
    M = 2 * k - d
    logp = gammaln(d + 1) - gammaln(k + 1) - gammaln(d - k + 1) + beta * J * M.astype(float) ** 2 / (2 * d) + h * M
    return M.astype(np.int64), np.exp(logp - logsumexp(logp))


def sample_spins(n: int, d: int, beta: float, J: float, h: float, generator: torch.Generator) -> torch.Tensor:
    """n exact samples (n, d) float32 of ±1 spins from P0."""
    M, p = magnetisation_law(d, beta, J, h)
    draw = torch.multinomial(torch.as_tensor(p), n, replacement=True, generator=generator)
    plus = torch.as_tensor((M[draw.numpy()] + d) // 2)  # number of +1 spins of each sample
    rank = torch.rand(n, d, generator=generator).argsort(1).argsort(1)  # a uniform random permutation per row
    return torch.where(rank < plus[:, None], 1.0, -1.0).to(torch.float32)


def cw_lambda(d: int, beta: float, J: float = 1.0, h: float = 0.0) -> float:
    """Top eigenvalue of the spins' covariance matrix: ``Var(M) / d``."""
    M, p = magnetisation_law(d, beta, J, h)
    mean = (M * p).sum()
    return float(((M - mean) ** 2 * p).sum() / d)


class CurieWeissScore:
    """Exact score of the noised Curie–Weiss measure (Hubbard–Stratonovich quadrature).

    One pass over ``G ≈ 2.7 sqrt(beta J d) + 22`` quadrature points with an online
    log-sum-exp, sharing one ``exp(-2|z|)`` between ``log 2cosh z`` and ``tanh z``:
    about ``G * d`` exponentials per state, memory ``O(B * d)``. Computed in
    float64 (the sums over d spins need it) and returned in the states' dtype.
    """

    ROW_ELEMENTS = 2**17  # states x spins per chunk (1 MiB of float64)

    def __init__(self, d: int, beta: float, J: float = 1.0, h: float = 0.0):
        self.d, self.beta, self.J, self.h = int(d), float(beta), float(J), float(h)
        bj = self.beta * self.J
        if bj <= 0:
            raise ValueError("the Curie-Weiss score needs beta * J > 0")
        s = math.sqrt(bj / self.d)  # the narrowest possible width of a maximum of w
        half = bj + 8 * s
        G = int(math.ceil(2 * half / (0.75 * s))) + 1
        self.u = torch.linspace(-half, half, G, dtype=torch.float64)
        self.log_prior = (-self.d * self.u**2 / (2 * bj)).tolist()

    def _fields(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.h + math.exp(-t) * x.to(torch.float64) / delta(t)

    def _scan(self, c: torch.Tensor, want_mean: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`_scan_rows` over chunks of rows small enough to stay in cache."""
        rows = max(1, self.ROW_ELEMENTS // max(c.shape[1], 1))
        if c.shape[0] <= rows:
            return self._scan_rows(c, want_mean)
        parts = [self._scan_rows(c[i:i + rows], want_mean) for i in range(0, c.shape[0], rows)]
        return torch.cat([p[0] for p in parts]), (torch.cat([p[1] for p in parts]) if want_mean else None)

    def _scan_rows(self, c: torch.Tensor, want_mean: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Online log-sum-exp over the grid: (log sum_k w_k (B,), sum_k w_k tanh(c + u_k) / sum_k w_k)."""
        run_max = torch.full((c.shape[0],), -math.inf, dtype=c.dtype)
        run_sum = torch.zeros(c.shape[0], dtype=c.dtype)
        acc = torch.zeros_like(c) if want_mean else None
        for u, lp in zip(self.u.tolist(), self.log_prior):
            z = c + u
            a = z.abs()
            e = torch.exp(-2 * a)
            lw = lp + (a + torch.log1p(e)).sum(1)  # log prior + sum_i log 2cosh(z_i)
            new_max = torch.maximum(run_max, lw)
            scale, w = torch.exp(run_max - new_max), torch.exp(lw - new_max)
            run_sum = run_sum * scale + w
            if want_mean:
                tanh = torch.sign(z) * (1 - e) / (1 + e)
                acc.mul_(scale[:, None]).add_(w[:, None] * tanh)
            run_max = new_max
        lse = run_max + torch.log(run_sum)
        return lse, (acc / run_sum[:, None] if want_mean else None)

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``E[a | x_t = x]`` (B, d) float64."""
        return self._scan(self._fields(x, t), True)[1]

    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log sum_a exp(beta J M^2/(2d) + h M - |x - a e^{-t}|^2 / (2 Delta_t))`` (B,) by the
        same quadrature: ``log P_t(x)`` up to the x-independent normalisation, the same
        constant as :func:`enumerate_log_density`."""
        dt = delta(t)
        step = float(self.u[1] - self.u[0])
        hs = 0.5 * math.log(self.d / (2 * math.pi * self.beta * self.J)) + math.log(step)
        lse = self._scan(self._fields(x, t), False)[0] + hs - self.d * math.exp(-2 * t) / (2 * dt)
        return lse - (x.to(torch.float64) ** 2).sum(1) / (2 * dt)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        mean = self.posterior_mean(x, t)
        return ((math.exp(-t) * mean - x.to(torch.float64)) / delta(t)).to(x.dtype)

    @staticmethod
    def classify(x: torch.Tensor) -> torch.Tensor:
        """Class of final samples: 1 when the magnetisation is positive, 0 otherwise."""
        return (x.sum(1) > 0).to(torch.int64)


def enumerate_log_density(x: torch.Tensor, t: float, beta: float, J: float = 1.0, h: float = 0.0) -> torch.Tensor:
    """Brute-force ``log sum_a exp(beta J M^2/(2d) + h M - |x - a e^{-t}|^2 / (2 Delta_t))`` (B,)
    over all ``2^d`` configurations (differentiable; for d <= 16)."""
    d = x.shape[1]
    codes = torch.arange(2**d)
    a = ((codes[:, None] >> torch.arange(d)) & 1).to(x.dtype) * 2 - 1  # (2^d, d)
    M = a.sum(1)
    log_p0 = beta * J * M**2 / (2 * d) + h * M
    dt = delta(t)
    logits = log_p0[None] + math.exp(-t) * (x @ a.T) / dt - d * math.exp(-2 * t) / (2 * dt)
    return torch.logsumexp(logits, 1) - (x**2).sum(1) / (2 * dt)


@register
class CurieWeiss(DataModel):
    """Curie–Weiss spins (``d``, ``n``, ``beta``, ``J``, ``h``); the class is the sign of the
    magnetisation (M <= 0 -> 0)."""

    name = "curie_weiss"
    kind = "solvable"

    @classmethod
    def sample(cls, dataset: dict, generator) -> Subset:
        x = sample_spins(dataset["n"], dataset["d"], dataset["beta"], dataset["J"], dataset["h"], generator)
        labels = cls.classify(x).numpy()
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": ["M <= 0", "M > 0"], "source": cls.name,
                "beta": dataset["beta"], "J": dataset["J"], "h": dataset["h"]}
        return Subset(x, labels, np.arange(len(labels), dtype=np.int64), meta)

    def exact_score(self) -> CurieWeissScore:
        return CurieWeissScore(self.meta["d"], self.meta["beta"], self.meta["J"], self.meta["h"])

    @staticmethod
    def classify(x: torch.Tensor) -> torch.Tensor:
        return CurieWeissScore.classify(x)

    def theory(self, t: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        lam = cw_lambda(self.meta["d"], self.meta["beta"], self.meta["J"], self.meta["h"])
        nan = np.full_like(t, np.nan)
        return {"phi": nan, "f": nan}, {"Lambda_population": lam, "t_S_population": speciation_time(lam),
                                        "beta": self.meta["beta"], "J": self.meta["J"], "h": self.meta["h"]}
