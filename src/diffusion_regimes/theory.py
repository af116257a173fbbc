"""Closed forms of the theory (Biroli, Bonnaire, De Bortoli, Mezard 2024).

Two-Gaussian mixture ``a ~ 1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)``, ``|m|^2 = mu^2 d``:

- speciation: the probability that two clones made at time t end in the same
  class, ``phi(t) = 1/2 int dy (G+^2 + G-^2)/(G+ + G-)`` with
  ``G+-(y) = N(y; +-|m| e^{-t}, Gamma_t)``, ``Gamma_t = Delta_t + s^2 e^{-2t}``.
  Writing ``r = |m| e^{-t} / sqrt(Gamma_t)`` it equals ``E_z[sigmoid(2 r^2 + 2 r z)]``,
  ``z ~ N(0, 1)``, computed by Gauss-Hermite quadrature; ``phi -> 0.77520`` (:data:`PHI_AT_T_S`) at
  ``t_S`` as d -> infinity (r -> 1).
- collapse: ``f(t) = alpha + 1/2 log(Delta_t / (Delta_t + s^2 e^{-2t}))``,
  ``alpha = log(n)/d``, zero at ``t_C = 1/2 log(1 + s^2/(n^{2/d} - 1))``.
- symmetry breaking: the potential ``V(q, t)`` of the projection on m
  (:func:`gm_potential`).

Hierarchical mixture (four centres ``±mu u ± mu2 v``): two speciation times from
the two top eigenvalues, and the factorised phi (:func:`hierarchical_phi`).
The Curie–Weiss model's exact quantities are in :mod:`diffusion_regimes.datamodels.curie_weiss`.
"""

from __future__ import annotations

import math

import numpy as np

from .schedule import delta, gamma

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(160)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def phi_of_ratio(r: np.ndarray | float) -> np.ndarray:
    """Clone agreement ``E_z[sigmoid(2 r^2 + 2 r z)]`` for signal-to-noise ratio(s) r."""
    r = np.asarray(r, dtype=np.float64)[..., None]
    logits = 2.0 * r * r + 2.0 * r * _GH_NODES
    return (0.5 * (1.0 + np.tanh(0.5 * logits)) * _GH_WEIGHTS).sum(-1)


#: phi at t_S in the closed form (the Gaussian mixture as d -> infinity, where the
#: signal-to-noise ratio r is 1 at t_S): 0.77520. The one level of the project: the
#: measured t_S is where phi crosses it, and the figures draw it.
PHI_AT_T_S = float(phi_of_ratio(1.0))


def gm_phi(t: np.ndarray | float, m_norm: float, sigma: float) -> np.ndarray:
    """Exact clone agreement phi(t) of the two-Gaussian mixture, shape of ``t``.

    ``m_norm``: |m| (= mu_tilde sqrt(d)); ``sigma``: per-coordinate std of each class.
    """
    t = np.asarray(t, dtype=np.float64)
    m_t = m_norm * np.exp(-t)
    return phi_of_ratio(m_t / np.sqrt(gamma(t, sigma)))


def gm_lambda(d: int, mu_tilde: float, sigma: float) -> float:
    """Top eigenvalue of the mixture's covariance: ``s^2 + mu^2 d``."""
    return sigma**2 + mu_tilde**2 * d


def hierarchical_lambdas(d: int, mu_tilde: float, mu_tilde2: float, sigma: float) -> tuple[float, float, float]:
    """Eigenvalues of the hierarchical mixture's covariance ``s^2 I + d mu^2 u u^T + d mu2^2 v v^T``
    (u, v orthonormal): the super-class one, the class one, and the bulk ``s^2`` (d - 2 times)."""
    return sigma**2 + mu_tilde**2 * d, sigma**2 + mu_tilde2**2 * d, sigma**2


def hierarchical_phi(t: np.ndarray | float, d: int, mu_tilde: float, mu_tilde2: float,
                     sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clone agreement of the hierarchical mixture at the super-class level, at the level of
    the class within it, and on the full class. The centres ``±mu u ± mu2 v`` have
    orthogonal directions, so P_t factorises along u and v and the backward dynamics of the
    two projections are independent two-Gaussian problems: ``phi_super = gm_phi(mu sqrt(d))``,
    ``phi_sub = gm_phi(mu2 sqrt(d))``, ``phi = phi_super * phi_sub``."""
    sup = gm_phi(t, mu_tilde * math.sqrt(d), sigma)
    sub = gm_phi(t, mu_tilde2 * math.sqrt(d), sigma)
    return sup, sub, sup * sub


def gm_potential(q: np.ndarray, t: float, d: int, mu_tilde: float, sigma: float = 1.0) -> np.ndarray:
    """Effective potential of the projection ``q = x . m / sqrt(d)`` of the two-Gaussian
    mixture at OU time t: the backward drift of q is ``-dV/dq`` with

        V(q, t) = (2/Gamma_t - 1) q^2 / 2 - 2 mu^2 log cosh(q sqrt(d) e^{-t} / Gamma_t),

    ``Gamma_t = Delta_t + s^2 e^{-2t}`` (= 1 for s = 1, where it is
    ``q^2/2 - 2 mu^2 log cosh(q e^{-t} sqrt(d))``), and noise of variance ``2 mu^2``
    per unit time. One well above t_S, two below: the symmetry breaking."""
    q = np.asarray(q, dtype=np.float64)
    g = float(gamma(float(t), sigma))
    z = q * math.sqrt(d) * math.exp(-t) / g
    logcosh = np.abs(z) + np.log1p(np.exp(-2 * np.abs(z))) - math.log(2)
    return (2 / g - 1) * q**2 / 2 - 2 * mu_tilde**2 * logcosh


def gm_projection_density(q: np.ndarray, t: float, d: int, mu_tilde: float, sigma: float = 1.0) -> np.ndarray:
    """Exact density of ``q = x . m / sqrt(d)`` under P_t: ``1/2 N(+c, mu^2 Gamma_t) + 1/2 N(-c, mu^2 Gamma_t)``
    with ``c = mu^2 sqrt(d) e^{-t}`` (what the histograms of sampled q should follow)."""
    q = np.asarray(q, dtype=np.float64)
    var = mu_tilde**2 * float(gamma(float(t), sigma))
    c = mu_tilde**2 * math.sqrt(d) * math.exp(-t)
    norm = 1.0 / math.sqrt(2 * math.pi * var)
    return 0.5 * norm * (np.exp(-(q - c) ** 2 / (2 * var)) + np.exp(-(q + c) ** 2 / (2 * var)))


def alpha(n: int, d: int) -> float:
    """``alpha = log(n)/d``: the excess entropy f at t -> infinity, n training points in dimension d."""
    return math.log(n) / d


def gm_excess_entropy(t: np.ndarray | float, n: int, d: int, sigma: float) -> np.ndarray:
    """Closed-form excess entropy ``f(t) = log(n)/d + 1/2 log(Delta/(Delta + s^2 e^{-2t}))``."""
    t = np.asarray(t, dtype=np.float64)
    return alpha(n, d) + 0.5 * np.log(delta(t) / gamma(t, sigma))


def gm_collapse_time(n: int, d: int, sigma: float, classes: int = 1) -> float:
    """Closed-form collapse time of a mixture of equal-weight Gaussians of class std ``s``:
    as d -> infinity ``t_C = 1/2 log(1 + s^2/(n^{2/d} - 1))`` (``classes = 1``); at finite d,
    keeping the entropy of mixing the K classes, ``1/2 log(1 + s^2/((n/K)^{2/d} - 1))``
    (``classes = K``: 1.473 against 1.427 for n = 2000, d = 256, two classes)."""
    return 0.5 * math.log1p(sigma**2 / math.expm1(2 * alpha(n / classes, d)))


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


# ----------------------------------------------------------------------------- the theory stage
#: summary columns (name, key of the metadata, dtype): one row per experiment
SUMMARY = (("t_C_theory_gm", "t_C", "Float64"), ("t_C_theory_gm_finite_d", "t_C_finite_d", "Float64"))


def theory_columns(data_model, theory: dict, t_S: float, Lambda: float,
                   data: tuple | None = None, seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """The data model's closed forms on ``theory.n_t`` OU times up to ``theory.t_max`` (NaN
    where it has none), and, with ``data`` = (training x (n, d), labels (n,), reference points
    (m, d)) and ``theory.reference.enabled``, the reference curves phi_G and phi_H
    (:func:`diffusion_regimes.references.reference_curves`) on ``reference.n_t`` times spanning
    ``reference.t_range`` x t_S, added to the grid (NaN on the other rows): (columns ``t``,
    ``phi``, ``f``, ..., ``phi_gaussian``, ..., scalar results)."""
    t = np.linspace(theory["t_max"] / theory["n_t"], theory["t_max"], theory["n_t"])
    ref = theory.get("reference") or {}
    use_ref = data is not None and ref.get("enabled") and t_S > 0
    t_ref = np.linspace(ref["t_range"][0] * t_S, ref["t_range"][1] * t_S, ref["n_t"]) if use_ref else np.empty(0)
    t = np.union1d(t, t_ref)
    columns, extra = data_model.theory(t)
    results = {"t_S": t_S, "Lambda": Lambda, "t_C": None,
               "model": data_model.meta["source"] if data_model.kind == "solvable" else None, **extra}
    if use_ref:
        from .references import reference_curves

        curves, found = reference_curves(*data, t_ref, ref, seed)
        rows = np.searchsorted(t, t_ref)
        for name, values in curves.items():
            full = np.full(len(t), np.nan)
            full[rows] = values
            columns[name] = full
        results.update(found)
    return {"t": t, **columns}, results
