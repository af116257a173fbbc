"""Score models behind one interface: ``score(x: (B, d), t: float) -> (B, d)``.

``x`` is a float32 batch of flattened states at OU time ``t`` (see
:mod:`diffusion_regimes.schedule`); the result is ``grad_x log P_t(x)``.
Samplers, cloning and collapse code see only this callable.

- :class:`GaussianMixtureScore`: exact score of ``1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)``.
- :class:`MixtureScore`: exact score of K equal-weight isotropic Gaussians (the
  hierarchical mixture).
- :class:`diffusion_regimes.datamodels.curie_weiss.CurieWeissScore`: exact score of the
  noised Curie–Weiss measure.
- :class:`EmpiricalScore`: exact score of the empirical measure of n training
  points, ``P_t(x) = 1/n sum_mu N(x; a_mu e^{-t}, Delta_t I)``, computed with an
  online log-sum-exp blocked over the training points so that memory stays
  ``O(B * block)`` whatever n.
- :class:`diffusion_regimes.networks.NetworkScore`: a noise-predicting network,
  ``F = -eps(x, t) / sqrt(Delta_t)``.

- :mod:`diffusion_regimes.external`: models trained elsewhere (diffusers, EDM-style,
  entry points), converted to this interface.

Which kind an experiment's score model is, what it reads and how it is built is the
score-model registry's (:mod:`diffusion_regimes.scoremodels`, :func:`build_score`).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from .schedule import delta, gamma


class Score(Protocol):
    """The score interface: ``(B, d)`` float32 states at OU time t -> ``(B, d)`` scores."""

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor: ...


class GaussianMixtureScore:
    """Exact score of the symmetric two-Gaussian mixture with centres +-m, class std sigma.

    ``F = (m_t / Gamma_t) tanh(m_t . x / Gamma_t) - x / Gamma_t`` with ``m_t = m e^{-t}``,
    ``Gamma_t = Delta_t + sigma^2 e^{-2t}``.
    """

    def __init__(self, m: torch.Tensor, sigma: float):
        self.m = m.to(torch.float32)
        self.sigma = float(sigma)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        m_t = self.m.to(x.dtype) * math.exp(-t)
        g = gamma(t, self.sigma)
        proj = torch.tanh(x @ m_t / g)
        return (proj[:, None] * m_t[None, :] - x) / g

    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log P_t(x)``, shape (B,), differentiable (for tests against autograd)."""
        m_t = self.m.to(x.dtype) * math.exp(-t)
        g = gamma(t, self.sigma)
        d = x.shape[1]
        base = -0.5 * d * math.log(2 * math.pi * g)
        lp = -((x - m_t) ** 2).sum(1) / (2 * g)
        lm = -((x + m_t) ** 2).sum(1) / (2 * g)
        return base + torch.logaddexp(lp, lm) - math.log(2)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class 0/1 of final samples: the sign of the projection on m (1 for +m)."""
        return (x @ self.m > 0).to(torch.int64)


class MixtureScore:
    """Exact score of an equal-weight mixture of K Gaussians ``N(m_k, sigma^2 I)``, centres (K, d).

    ``F = (e^{-t} sum_k r_k m_k - x) / Gamma_t`` with responsibilities
    ``r = softmax_k((x . m_k e^{-t} - |m_k|^2 e^{-2t} / 2) / Gamma_t)``,
    ``Gamma_t = Delta_t + sigma^2 e^{-2t}``.
    """

    def __init__(self, centres: torch.Tensor, sigma: float):
        self.centres = centres.to(torch.float32)
        self.sq = (self.centres**2).sum(1)
        self.sigma = float(sigma)

    def _logits(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, float]:
        g = gamma(t, self.sigma)
        c = self.centres.to(x.dtype)
        return (math.exp(-t) * x @ c.T - 0.5 * math.exp(-2 * t) * self.sq.to(x.dtype)) / g, g

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        logits, g = self._logits(x, t)
        return (math.exp(-t) * torch.softmax(logits, 1) @ self.centres.to(x.dtype) - x) / g

    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log P_t(x)``, shape (B,), differentiable."""
        logits, g = self._logits(x, t)
        d = x.shape[1]
        return (torch.logsumexp(logits, 1) - math.log(len(self.centres)) - (x * x).sum(1) / (2 * g)
                - 0.5 * d * math.log(2 * math.pi * g))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class (B,) int64 of final samples: the most likely centre."""
        return (x @ self.centres.to(x.dtype).T - 0.5 * self.sq.to(x.dtype)).argmax(1)


class EmpiricalScore:
    """Exact score of the empirical measure of training points ``a`` (n, d).

    All heavy work goes through :meth:`_scan`, an online (streaming) log-sum-exp
    over blocks of ``block`` training points: two matrix products per block.
    States are processed ``rows`` at a time, so the working memory is
    ``O(rows * (block + d))`` floats whatever n and the batch size. The arithmetic
    is done in the dtype of the states passed in (float64 states are compared with
    the float32 training points block by block, without a float64 copy of them).
    """

    def __init__(self, a: torch.Tensor, block: int = 4096, rows: int = 2048):
        self.a = a.to(torch.float32).contiguous()
        self.sq_norm = (self.a * self.a).sum(1)
        self.block = int(block)
        self.rows = int(rows)
        self.n, self.d = self.a.shape

    def _scan(self, x: torch.Tensor, t: float, want_mean: bool):
        """:meth:`_scan_rows` over chunks of ``rows`` states, results concatenated."""
        if x.shape[0] <= self.rows:
            return self._scan_rows(x, t, want_mean)
        parts = [self._scan_rows(x[i:i + self.rows], t, want_mean) for i in range(0, x.shape[0], self.rows)]
        return tuple(None if p[0] is None else torch.cat(p) for p in zip(*parts))

    def _scan_rows(self, x: torch.Tensor, t: float, want_mean: bool):
        """Streaming pass over training blocks for logits ``(x.a e^{-t} - |a|^2 e^{-2t}/2)/Delta``.

        Returns (lse (B,), mean (B, d) or None, argmax (B,), max logit (B,)), where
        ``mean = sum_mu softmax_mu a_mu``. The logits equal
        ``-|x - a_mu e^{-t}|^2 / (2 Delta_t)`` up to the mu-independent ``|x|^2/(2 Delta_t)``.
        """
        dt = delta(t)
        c = math.exp(-t) / dt
        q = 0.5 * math.exp(-2 * t) / dt
        B = x.shape[0]
        dtype = x.dtype
        run_max = torch.full((B,), -math.inf, dtype=dtype)
        run_arg = torch.zeros(B, dtype=torch.int64)
        run_sum = torch.zeros(B, dtype=dtype)
        acc = torch.zeros(B, self.d, dtype=dtype) if want_mean else None
        xc = x * c
        for start in range(0, self.n, self.block):
            a = self.a[start:start + self.block]
            sq = self.sq_norm[start:start + self.block]
            if a.dtype != dtype:  # e.g. float64 states against float32 training points
                a = a.to(dtype)
                sq = (a * a).sum(1)
            logits = torch.addmm(sq.mul(-q)[None, :], xc, a.T)
            blk_max, blk_arg = logits.max(1)
            new_max = torch.maximum(run_max, blk_max)
            scale = torch.exp(run_max - new_max)
            w = torch.exp_(logits.sub_(new_max[:, None]))
            run_sum = run_sum * scale + w.sum(1)
            if want_mean:
                acc = torch.addmm(acc * scale[:, None], w, a)
            better = blk_max > run_max
            run_arg = torch.where(better, blk_arg + start, run_arg)
            run_max = new_max
        lse = run_max + torch.log(run_sum)
        mean = acc / run_sum[:, None] if want_mean else None
        return lse, mean, run_arg, run_max

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        _, mean, _, _ = self._scan(x, t, want_mean=True)
        return (mean * math.exp(-t) - x) / delta(t)

    @torch.no_grad()
    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log P_t(x)`` of the empirical measure, shape (B,)."""
        lse, _, _, _ = self._scan(x, t, want_mean=False)
        dt = delta(t)
        return (lse - (x * x).sum(1) / (2 * dt) - math.log(self.n)
                - 0.5 * self.d * math.log(2 * math.pi * dt))

    @torch.no_grad()
    def nearest(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (B,) int64 of the nearest scaled training point ``a_mu e^{-t}`` and
        the squared distance (B,) float32 ``|x - a_mu e^{-t}|^2`` to it."""
        _, _, arg, mx = self._scan(x, t, want_mean=False)
        dist2 = (x * x).sum(1) - 2 * delta(t) * mx
        return arg, dist2.clamp_min(0.0)

    @torch.no_grad()
    def two_nearest(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For points x (B, d): the index (B,) of the nearest training point and the Euclidean
        distances (B,) to the nearest and second-nearest ones (unscaled, t = 0), blocked over
        the training points (memory ``O(B * block)``). Needs n >= 2."""
        if self.n < 2:
            raise ValueError("two nearest points need at least two points")
        x = x.to(self.a.dtype)
        xsq = (x * x).sum(1, keepdim=True)
        best = torch.full((x.shape[0], 2), math.inf, dtype=x.dtype)
        best_idx = torch.zeros((x.shape[0], 2), dtype=torch.int64)
        for start in range(0, self.n, self.block):
            a = self.a[start:start + self.block]
            d2 = torch.addmm(xsq + self.sq_norm[start:start + self.block][None, :], x, a.T, alpha=-2.0)
            k = min(2, a.shape[0])
            vals, idx = d2.topk(k, dim=1, largest=False)
            both = torch.cat([best, vals], 1)
            both_idx = torch.cat([best_idx, idx + start], 1)
            order = both.argsort(1)[:, :2]
            best, best_idx = both.gather(1, order), both_idx.gather(1, order)
        dist = best.clamp_min(0.0).sqrt()
        return best_idx[:, 0], dist[:, 0], dist[:, 1]

    def log_density_autograd(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Unblocked, differentiable ``log P_t(x)`` (for tests on small n)."""
        dt = delta(t)
        d2 = ((x[:, None, :] - self.a.to(x.dtype)[None] * math.exp(-t)) ** 2).sum(-1)
        return (torch.logsumexp(-d2 / (2 * dt), 1) - math.log(self.n)
                - 0.5 * self.d * math.log(2 * math.pi * dt))
