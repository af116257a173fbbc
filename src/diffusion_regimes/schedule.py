"""The one time convention of the project, and every schedule array.

Forward process: the Ornstein-Uhlenbeck process ``dx = -x dt + sqrt(2) dW``, so
``x(t) = a e^{-t} + sqrt(Delta_t) z`` with ``Delta_t = 1 - e^{-2t}``. Every
column named ``t`` in the project is this OU time.

A DDPM discrete schedule (linear beta, Ho et al. 2020) maps to OU time through
``abar_k = e^{-2 t_k}``, i.e. ``t_k = -1/2 log abar_k``. Schedule arrays are
float64; :func:`gather` is the one helper that reads per-step values.

Sampling grids are decreasing arrays of OU times ``t_0 = T > t_1 > ... > t_K``.

This module owns the noise convention: :func:`delta` (``Delta_t``), :func:`gamma`
(``Gamma_t = Delta_t + s^2 e^{-2t}``, the variance at time t of a Gaussian of
variance ``s^2`` per coordinate) and :func:`forward_noise`. Every other module
calls them. The functions take Python floats, numpy arrays or torch tensors; the
module does not import torch (the configuration layer imports it).
"""

from __future__ import annotations

import functools
import logging
import math
import numbers

import numpy as np

from .errors import InputError

DDPM_STEPS = 1000
DDPM_BETA_MIN = 1e-4
DDPM_BETA_MAX = 2e-2


def delta(t):
    """Noise variance ``Delta_t = 1 - e^{-2t}`` of the OU process at time t (a float, a
    numpy array or a torch tensor; the result has the same type)."""
    if isinstance(t, np.ndarray):
        return -np.expm1(-2.0 * t)
    if isinstance(t, numbers.Real):
        return -math.expm1(-2.0 * t)
    return -(-2.0 * t).expm1()  # a torch tensor


def gamma(t, sigma: float):
    """``Gamma_t = Delta_t + sigma^2 e^{-2t}``: the per-coordinate variance at time t of a
    Gaussian of variance ``sigma^2`` (a class of the mixtures), for float or array t."""
    if isinstance(t, np.ndarray):
        return delta(t) + sigma**2 * np.exp(-2 * t)
    return delta(t) + sigma**2 * math.exp(-2 * t)


def forward_noise(a, t, eps):
    """The forward process at time t: ``x_t = a e^{-t} + sqrt(Delta_t) eps``.

    ``a``, ``eps``: (B, d) clean data and standard normal noise (tensors); ``t``: one
    OU time (float) or one per row ((B,) tensor)."""
    if isinstance(t, numbers.Real):
        return a * math.exp(-t) + math.sqrt(delta(t)) * eps
    return a * (-t).exp()[:, None] + delta(t).sqrt()[:, None] * eps


def ddpm_betas(steps: int = DDPM_STEPS, beta_min: float = DDPM_BETA_MIN,
               beta_max: float = DDPM_BETA_MAX) -> np.ndarray:
    """Linear DDPM betas, shape (steps,), float64; index k-1 holds beta_k."""
    return np.linspace(beta_min, beta_max, steps, dtype=np.float64)


def ddpm_alpha_bar(steps: int = DDPM_STEPS, beta_min: float = DDPM_BETA_MIN,
                   beta_max: float = DDPM_BETA_MAX) -> np.ndarray:
    """Cumulative products ``abar_k``, shape (steps,), float64 (k = 1..steps)."""
    return np.cumprod(1.0 - ddpm_betas(steps, beta_min, beta_max))


def ou_time(alpha_bar) -> np.ndarray:
    """OU time ``t = -1/2 log abar`` of a discrete schedule's cumulative product (float64 array):
    ``abar = e^{-2t}`` is the signal variance left at t, in every discrete-time convention."""
    return -0.5 * np.log(np.asarray(alpha_bar, dtype=np.float64))


def ddpm_times(steps: int = DDPM_STEPS, beta_min: float = DDPM_BETA_MIN,
               beta_max: float = DDPM_BETA_MAX) -> np.ndarray:
    """OU times ``t_k = -1/2 log abar_k`` of DDPM steps k = 1..steps, increasing."""
    return ou_time(ddpm_alpha_bar(steps, beta_min, beta_max))


#: the distributions of training times (``train.times``): see :func:`training_times`
TRAINING_TIMES = ("ddpm", "ddpm_continuous", "uniform", "log_snr")


def training_times(kind: str, u):
    """OU training times from uniform draws ``u`` in [0, 1) (a float tensor or array, any shape).

    Every kind spans the DDPM range ``[t_1, t_1000]`` (5.0e-5 ... 5.06), so a network trained
    with any of them covers the sampler grids of the DDPM-trained ones:

    - ``ddpm``: the discrete times ``t_k``, k uniform in 1..1000 (the DDPM recipe; 22.6 % of
      draws above t = 2.77);
    - ``ddpm_continuous``: the same density, continuous: k uniform in [1, 1000], t linear in k
      between the discrete times;
    - ``uniform``: uniform in OU time (45 % of draws above t = 2.77);
    - ``log_snr``: uniform in ``log(e^{2t} - 1)`` (the log noise-to-signal ratio of
      :func:`time_grid`).
    Returns float32 OU times of ``u``'s shape and type (torch in, torch out).
    """
    times = _ddpm_table()
    t_lo, t_hi = float(times[0]), float(times[-1])
    v = np.asarray(u.detach().cpu().numpy() if hasattr(u, "detach") else u, dtype=np.float64)
    if kind == "ddpm":
        out = times[np.minimum(np.floor(v * len(times)), len(times) - 1).astype(np.int64)]
    elif kind == "ddpm_continuous":
        pos = v * (len(times) - 1)
        i = np.minimum(np.floor(pos), len(times) - 2).astype(np.int64)
        out = times[i] + (pos - i) * (times[i + 1] - times[i])
    elif kind == "uniform":
        out = t_lo + v * (t_hi - t_lo)
    elif kind == "log_snr":
        lam_lo, lam_hi = math.log(math.expm1(2 * t_lo)), math.log(math.expm1(2 * t_hi))
        out = 0.5 * np.log1p(np.exp(lam_lo + v * (lam_hi - lam_lo)))
    else:
        raise ValueError(f"unknown training-time distribution {kind!r}: use one of {', '.join(TRAINING_TIMES)}")
    out = out.astype(np.float32)
    if hasattr(u, "detach"):  # torch in, torch out
        import torch

        return torch.from_numpy(out).to(u.device)
    return out


@functools.lru_cache(maxsize=1)
def _ddpm_table() -> np.ndarray:
    """The default DDPM times, computed once (read at every training step)."""
    times = ddpm_times()
    times.flags.writeable = False
    return times


def gather(values, step):
    """Per-sample schedule values ``values[step - 1]`` (DDPM steps are 1-based).

    ``values``: (steps,) schedule array; ``step``: (B,) int64 tensor in 1..steps.
    Returns a float32 tensor of shape (B,) on ``step``'s device.
    """
    import torch

    v = torch.as_tensor(values, dtype=torch.float64, device=step.device)
    return v[step - 1].to(torch.float32)


def ou_to_ddpm_step(t: np.ndarray | float, steps: int = DDPM_STEPS) -> np.ndarray:
    """Nearest DDPM step index (1..steps) for OU time(s) t."""
    times = ddpm_times(steps)
    idx = np.searchsorted(times, np.asarray(t, dtype=np.float64))
    idx = np.clip(idx, 1, steps - 1)
    left, right = times[idx - 1], times[idx]
    t_arr = np.asarray(t, dtype=np.float64)
    nearest = np.where(np.abs(t_arr - left) <= np.abs(right - t_arr), idx - 1, idx)
    return nearest + 1


def time_grid(kind: str, steps: int, T: float | None = None, t_end: float = 1e-3) -> np.ndarray:
    """Decreasing grid of OU times from ``T`` down to ``t_end`` with ``steps`` steps.

    kind:
      - ``uniform``: linear in t.
      - ``log_snr``: linear in ``log(e^{2t} - 1)`` (log noise-to-signal ratio):
        uniform in t at large t, geometric near t = 0 where scores are stiff.
      - ``ddpm``: the DDPM times t_k (linear beta, 1000 steps), evenly respaced
        to ``steps`` steps from the last one down to step 1; ``T`` and ``t_end``
        are set by the schedule and must be left as None / default.
    Returns float64 array of shape (steps + 1,).
    """
    if steps < 1:
        raise ValueError(f"time grid needs steps >= 1, got {steps}")
    if kind == "ddpm":
        if steps > DDPM_STEPS - 1:
            raise ValueError(f"the ddpm grid has at most {DDPM_STEPS - 1} steps, got {steps}")
        times = ddpm_times()
        idx = np.unique(np.round(np.linspace(len(times) - 1, 0, steps + 1)).astype(int))[::-1]
        return times[idx].copy()
    if T is None or not T > t_end > 0:
        raise ValueError(f"time grid needs T > t_end > 0, got T={T}, t_end={t_end}")
    if kind == "uniform":
        return np.linspace(T, t_end, steps + 1)
    if kind == "log_snr":
        lam = np.linspace(math.log(math.expm1(2 * T)), math.log(math.expm1(2 * t_end)), steps + 1)
        return 0.5 * np.log1p(np.exp(lam))
    raise ValueError(f"unknown time grid kind {kind!r}: use 'uniform', 'log_snr' or 'ddpm'")


def speciation_time(Lambda: float) -> float:
    """Speciation time ``t_S = 1/2 log Lambda`` (Lambda: top covariance eigenvalue)."""
    if Lambda <= 0:
        raise ValueError(f"Lambda must be positive, got {Lambda}")
    return 0.5 * math.log(Lambda)


def sampler_grid(block: dict) -> np.ndarray:
    """The decreasing OU-time grid of a sampler config block ``{grid, steps, T, t_end}`` (T is
    the ddpm grid's own)."""
    return time_grid(block["grid"], int(block["steps"]), None if block["grid"] == "ddpm" else float(block["T"]),
                     float(block.get("t_end", 1e-3)))


def snap_to_grid(grid: np.ndarray, times, duplicates: str = "refuse") -> np.ndarray:
    """Indices (int64) of the points of a decreasing time ``grid`` nearest to ``times``. A
    time outside the grid is one line. Two times on one grid point (branch times: their rows
    would repeat each other, and a crossing would fall between equal times) are, by
    ``duplicates``: ``refuse``: one line (validation, times in OU time); ``merge``: kept once,
    with a logged warning (jobs, where times in units of t_S meet the grid); ``keep``: both."""
    times = np.asarray(times, dtype=np.float64)
    lo, hi = grid[-1], grid[0]
    bad = times[(times > hi) | (times < lo)]
    if len(bad):
        raise InputError(f"branch time {bad[0]:.4g} is outside the sampler's grid "
                         f"[{lo:.4g}, {hi:.4g}]: raise the sampler's T or lower the times")
    idx = np.abs(grid[None, :] - times[:, None]).argmin(1)
    if duplicates == "keep" or len(np.unique(idx)) == len(idx):
        return idx
    first, again = next((i, j) for j in range(len(idx)) for i in range(j) if idx[i] == idx[j])
    same = (f"branch times {times[first]:.4g} and {times[again]:.4g} fall on the same step of the sampler's grid "
            f"(OU time {grid[idx[first]]:.4g})")
    if duplicates == "refuse":
        raise InputError(f"{same}: raise the sampler's steps or spread the times")
    _, keep = np.unique(idx, return_index=True)
    merged = len(idx) - len(keep)
    logging.getLogger("diffusion_regimes").warning(
        "%s: %d branch time(s) merged with a neighbour, each grid time measured once; raise the sampler's "
        "steps to separate them", same, merged)
    return idx[np.sort(keep)]
