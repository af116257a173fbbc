"""Closed forms of the theory (Biroli, Bonnaire, De Bortoli, Mezard 2024).

Two-Gaussian mixture ``a ~ 1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)``, ``|m|^2 = mu^2 d``:

- speciation: the probability that two clones made at time t end in the same
  class, ``phi(t) = 1/2 int dy (G+^2 + G-^2)/(G+ + G-)`` with
  ``G+-(y) = N(y; +-|m| e^{-t}, Gamma_t)``, ``Gamma_t = Delta_t + s^2 e^{-2t}``.
  Writing ``r = |m| e^{-t} / sqrt(Gamma_t)`` it equals ``E_z[sigmoid(2 r^2 + 2 r z)]``,
  ``z ~ N(0, 1)``, computed by Gauss-Hermite quadrature; ``phi -> 0.775`` at
  ``t_S`` as d -> infinity (r -> 1).
- collapse: ``f(t) = alpha + 1/2 log(Delta_t / (Delta_t + s^2 e^{-2t}))``,
  ``alpha = log(n)/d``, zero at ``t_C = 1/2 log(1 + s^2/(n^{2/d} - 1))``.
"""

from __future__ import annotations

import math

import numpy as np

from .schedule import delta

#: The measured t_S is where phi crosses this level: phi(t_S) of the Gaussian
#: mixture as d -> infinity (``phi_of_ratio(1.0)`` = 0.7752), rounded as in the paper.
PHI_CROSSING = 0.775
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(160)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def phi_of_ratio(r: np.ndarray | float) -> np.ndarray:
    """Clone agreement ``E_z[sigmoid(2 r^2 + 2 r z)]`` for signal-to-noise ratio(s) r."""
    r = np.asarray(r, dtype=np.float64)[..., None]
    logits = 2.0 * r * r + 2.0 * r * _GH_NODES
    return (0.5 * (1.0 + np.tanh(0.5 * logits)) * _GH_WEIGHTS).sum(-1)


def gm_phi(t: np.ndarray | float, m_norm: float, sigma: float) -> np.ndarray:
    """Exact clone agreement phi(t) of the two-Gaussian mixture, shape of ``t``.

    ``m_norm``: |m| (= mu_tilde sqrt(d)); ``sigma``: per-coordinate std of each class.
    """
    t = np.asarray(t, dtype=np.float64)
    m_t = m_norm * np.exp(-t)
    gamma = delta(t) + sigma**2 * np.exp(-2 * t)
    return phi_of_ratio(m_t / np.sqrt(gamma))


def gm_lambda(d: int, mu_tilde: float, sigma: float) -> float:
    """Top eigenvalue of the mixture's covariance: ``s^2 + mu^2 d``."""
    return sigma**2 + mu_tilde**2 * d


def gm_excess_entropy(t: np.ndarray | float, n: int, d: int, sigma: float) -> np.ndarray:
    """Closed-form excess entropy ``f(t) = log(n)/d + 1/2 log(Delta/(Delta + s^2 e^{-2t}))``."""
    t = np.asarray(t, dtype=np.float64)
    dt = delta(t)
    return math.log(n) / d + 0.5 * np.log(dt / (dt + sigma**2 * np.exp(-2 * t)))


def gm_collapse_time(n: int, d: int, sigma: float) -> float:
    """Closed-form collapse time ``t_C = 1/2 log(1 + s^2/(n^{2/d} - 1))``."""
    return 0.5 * math.log1p(sigma**2 / math.expm1(2 * math.log(n) / d))


def crossing_time(t: np.ndarray, y: np.ndarray, level: float) -> float:
    """Time at which ``y(t)`` crosses ``level``, by linear interpolation.

    ``t`` increasing; ``y`` is expected to decrease through ``level`` (phi) or to
    increase through it (f); the crossing closest to the large-t side is
    returned. NaN when ``y`` never crosses.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64) - level
    order = np.argsort(t)
    t, y = t[order], y[order]
    sign = np.sign(y)
    idx = np.nonzero(sign[:-1] * sign[1:] <= 0)[0]
    idx = idx[(y[idx] != 0) | (y[idx + 1] != 0)]
    if len(idx) == 0:
        return float("nan")
    i = idx[-1]
    if y[i] == y[i + 1]:
        return float(t[i])
    return float(t[i] + (t[i + 1] - t[i]) * y[i] / (y[i] - y[i + 1]))
