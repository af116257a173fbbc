"""Score models behind one interface: ``score(x: (B, d), t: float) -> (B, d)``.

``x`` is a float32 batch of flattened states at OU time ``t`` (see
:mod:`diffusion_regimes.schedule`); the result is ``grad_x log P_t(x)``.
Samplers, cloning and collapse code see only this callable.

- :class:`GaussianMixtureScore`: exact score of ``1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)``.
- :class:`MixtureScore`: exact score of K equal-weight isotropic Gaussians (the
  hierarchical mixture).
- :class:`diffusion_regimes.curie_weiss.CurieWeissScore`: exact score of the
  noised Curie–Weiss measure.
- :class:`EmpiricalScore`: exact score of the empirical measure of n training
  points, ``P_t(x) = 1/n sum_mu N(x; a_mu e^{-t}, Delta_t I)``, computed with an
  online log-sum-exp blocked over the training points so that memory stays
  ``O(B * block)`` whatever n.
- :class:`NetworkScore`: a noise-predicting network, ``F = -eps(x, t) / sqrt(Delta_t)``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from .device import autocast, resolve_channels_last, resolve_device, to_layout
from .schedule import delta


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

    def _gamma(self, t: float) -> float:
        return delta(t) + self.sigma**2 * math.exp(-2 * t)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        m_t = self.m.to(x.dtype) * math.exp(-t)
        gamma = self._gamma(t)
        proj = torch.tanh(x @ m_t / gamma)
        return (proj[:, None] * m_t[None, :] - x) / gamma

    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log P_t(x)``, shape (B,), differentiable (for tests against autograd)."""
        m_t = self.m.to(x.dtype) * math.exp(-t)
        gamma = self._gamma(t)
        d = x.shape[1]
        base = -0.5 * d * math.log(2 * math.pi * gamma)
        lp = -((x - m_t) ** 2).sum(1) / (2 * gamma)
        lm = -((x + m_t) ** 2).sum(1) / (2 * gamma)
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
        gamma = delta(t) + self.sigma**2 * math.exp(-2 * t)
        c = self.centres.to(x.dtype)
        return (math.exp(-t) * x @ c.T - 0.5 * math.exp(-2 * t) * self.sq.to(x.dtype)) / gamma, gamma

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        logits, gamma = self._logits(x, t)
        return (math.exp(-t) * torch.softmax(logits, 1) @ self.centres.to(x.dtype) - x) / gamma

    def log_density(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``log P_t(x)``, shape (B,), differentiable."""
        logits, gamma = self._logits(x, t)
        d = x.shape[1]
        return (torch.logsumexp(logits, 1) - math.log(len(self.centres)) - (x * x).sum(1) / (2 * gamma)
                - 0.5 * d * math.log(2 * math.pi * gamma))

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

    def log_density_autograd(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Unblocked, differentiable ``log P_t(x)`` (for tests on small n)."""
        dt = delta(t)
        d2 = ((x[:, None, :] - self.a.to(x.dtype)[None] * math.exp(-t)) ** 2).sum(-1)
        return (torch.logsumexp(-d2 / (2 * dt), 1) - math.log(self.n)
                - 0.5 * self.d * math.log(2 * math.pi * dt))


class NetworkScore:
    """Score of a noise-predicting network ``eps(x, t)``: ``F = -eps / sqrt(Delta_t)``.

    ``model(x_img: (B, C, H, W), t: (B,)) -> eps`` with OU time t. States stay
    on the CPU; they go to ``device`` ``batch_size`` rows at a time, so device
    memory is bounded by the batch size whatever the number of trajectories.
    ``precision`` ``bf16`` runs the forward pass under bf16 autocast (the score is
    returned in the states' dtype); channels_last is used on CUDA.
    """

    def __init__(self, model: torch.nn.Module, shape: tuple[int, int, int], batch_size: int = 512,
                 device: str = "cpu", precision: str = "fp32"):
        self.device = resolve_device(device)
        self.precision = precision
        self.channels_last = resolve_channels_last(None, self.device)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt).eval()
        self.shape = tuple(shape)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        out = torch.empty_like(x)
        scale = -1.0 / math.sqrt(delta(t))
        for start in range(0, x.shape[0], self.batch_size):
            xb = x[start:start + self.batch_size].to(self.device, torch.float32, non_blocking=True)
            tb = torch.full((xb.shape[0],), float(t), dtype=torch.float32, device=self.device)
            with autocast(self.device, self.precision):
                eps = self.model(to_layout(xb.view(-1, *self.shape), self.channels_last), tb)
            out[start:start + xb.shape[0]] = (eps.float().reshape(xb.shape[0], -1) * scale).to(x.device, x.dtype)
        return out
