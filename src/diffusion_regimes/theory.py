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
The Curie–Weiss model's exact quantities are in :mod:`diffusion_regimes.datamodels.curie_weiss`,
those of classes that differ in their covariance in :mod:`diffusion_regimes.datamodels.covariance`.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError
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


# ----------------------------------------------------------------------------- classes that differ in their covariance
# K Gaussian classes N(mu_c u, sigma_c^2 I), u = (1, ..., 1): the data model is
# :mod:`diffusion_regimes.datamodels.covariance` (its docstring derives these forms).

#: Gauss-Hermite nodes and weights for q (probabilists', normalised)
_Q_NODES, _Q_WEIGHTS = np.polynomial.hermite_e.hermegauss(48)
_Q_WEIGHTS = _Q_WEIGHTS / _Q_WEIGHTS.sum()
#: points of the grid in log s per class
S_POINTS = 801
#: the chi-square tails left out of the grid in s (each side)
S_TAIL = 1e-13


def cov_class_parameters(dataset: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(variances (K,), means (K,), weights (K,) summing to 1) of a dataset block or subset
    metadata; one line on a mismatch of lengths or on two identical classes."""
    var = np.asarray(dataset["variances"], dtype=np.float64)
    K = len(var)
    means = np.zeros(K) if dataset.get("means") is None else np.asarray(dataset["means"], dtype=np.float64)
    weights = np.full(K, 1.0 / K) if dataset.get("weights") is None else np.asarray(dataset["weights"], np.float64)
    for name, v in (("means", means), ("weights", weights)):
        if len(v) != K:
            raise InputError(f"{name} has {len(v)} entries for {K} variances: give one per class")
    if len({(float(a), float(b)) for a, b in zip(var, means)}) < K:
        raise InputError("two classes have the same variance and mean: make every class distinct")
    return var, means, weights / weights.sum()


def cov_pair_kappa2(t, d: int, var_a: float, var_b: float, mu_a: float = 0.0, mu_b: float = 0.0) -> np.ndarray:
    """kappa^2 of classes a, b at OU times t (the large-d law of their log-likelihood ratio,
    ``N(+-kappa^2/2, kappa^2)``)."""
    t = np.asarray(t, dtype=np.float64)
    e2 = np.exp(-2 * t)
    gbar = 0.5 * (var_a + var_b) * e2 + -np.expm1(-2 * t)
    return 0.5 * d * ((var_a - var_b) * e2 / gbar) ** 2 + (mu_a - mu_b) ** 2 * d * e2 / gbar


def cov_pair_speciation_time(d: int, var_a: float, var_b: float, mu_a: float = 0.0, mu_b: float = 0.0) -> float:
    """The time at which kappa = 2 for classes a, b: ``1/2 log(|delta| sqrt(d/8) - (sbar - 1))``
    for equal means, the root of kappa^2 = 4 otherwise; NaN when kappa < 2 at t = 0 (the two
    classes are not told apart even without noise)."""
    if mu_a == mu_b:
        arg = abs(var_a - var_b) * math.sqrt(d / 8) - (0.5 * (var_a + var_b) - 1)
        return 0.5 * math.log(arg) if arg > 1 else float("nan")
    f = lambda t: cov_pair_kappa2(t, d, var_a, var_b, mu_a, mu_b) - 4.0  # noqa: E731
    if f(0.0) <= 0:
        return float("nan")
    hi = 1.0
    while f(hi) > 0:
        hi *= 2
    return float(_scipy().optimize.brentq(f, 0.0, hi, xtol=1e-12))


def cov_splits(d: int, var, means, weights) -> list[tuple[tuple[int, ...], tuple[int, ...], float]]:
    """The speciation tree: (classes A, classes B, closed-form t_S of the split) per split, in
    the order they happen in generation (the largest t_S first). A group of classes that has
    not split yet acts as one class with its weighted mean variance and mean (their Gamma_c
    differ by O(e^{-2t}) there); the tree merges, one step at a time, the two groups whose
    pair speciates last (:func:`cov_pair_speciation_time` of their effective parameters), which is
    then the split's time. A pair never told apart (NaN) merges first."""
    groups = [((c,), float(weights[c]), float(var[c]), float(means[c])) for c in range(len(var))]

    def height(g, h) -> float:
        t = cov_pair_speciation_time(d, g[2], h[2], g[3], h[3])
        return -math.inf if math.isnan(t) else t

    out = []
    while len(groups) > 1:
        h, i, j = min((height(groups[i], groups[j]), i, j) for i in range(len(groups))
                      for j in range(i + 1, len(groups)))
        (A, wa, va, ma), (B, wb, vb, mb) = groups[i], groups[j]
        out.append((A, B, float("nan") if h == -math.inf else h))
        merged = (tuple(sorted(A + B)), wa + wb, (wa * va + wb * vb) / (wa + wb), (wa * ma + wb * mb) / (wa + wb))
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [merged]
    return out[::-1]


def cov_split_name(A, B) -> str:
    """The name of a split's level: ``split{A}_{B}`` (class indices), e.g. ``split01_2``."""
    return "split" + "".join(map(str, A)) + "_" + "".join(map(str, B))


def cov_phi(t: np.ndarray, d: int, var, means, weights,
                      groups: list[tuple[tuple[int, ...], tuple[int, ...]]] = ()) -> dict[str, np.ndarray]:
    """Exact ``phi(t) = E[sum_c P(c | x_t)^2]`` (key ``phi``) and, per split (A, B) of
    ``groups``, ``E[P_A^2 + P_B^2] / E[(P_A + P_B)^2]`` (key ``cov_split_name(A, B)``), each (T,),
    by quadrature over ``q | c`` (Gauss-Hermite) and ``s | c ~ Gamma_c chi2_{d-1}`` (a grid
    of :data:`S_POINTS` in log s over the chi-square's range but for :data:`S_TAIL` tails,
    weights renormalised)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    var, means, weights = (np.asarray(v, dtype=np.float64) for v in (var, means, weights))
    K, nu = len(var), d - 1
    lo, hi = _scipy().stats.chi2.ppf(S_TAIL, nu), _scipy().stats.chi2.isf(S_TAIL, nu)
    u = np.linspace(math.log(lo), math.log(hi), S_POINTS)  # log of a chi2_nu variable
    w_u = np.exp(_scipy().stats.chi2.logpdf(np.exp(u), nu) + u)
    w_u /= w_u.sum()
    out = {"phi": np.empty(len(t))}
    for A, B in groups:
        out[cov_split_name(A, B)] = np.empty(len(t))
    for i, ti in enumerate(t):
        g = var * math.exp(-2 * ti) + (-math.expm1(-2 * ti))  # (K,)
        m = means * math.sqrt(d) * math.exp(-ti)  # class means of q
        num = {key: 0.0 for key in out}
        den = {key: 0.0 for key in out}
        for c in range(K):  # points of class c: q (Q,), s (S,)
            q = m[c] + math.sqrt(g[c]) * _Q_NODES
            s = g[c] * np.exp(u)
            logit = (np.log(weights) - 0.5 * d * np.log(g))[None, None, :] \
                - (q[:, None, None] - m[None, None, :]) ** 2 / (2 * g) - s[None, :, None] / (2 * g)
            post = np.exp(logit - logit.max(-1, keepdims=True))
            post /= post.sum(-1, keepdims=True)  # (Q, S, K)
            w = weights[c] * _Q_WEIGHTS[:, None] * w_u[None, :]
            num["phi"] += float((w * (post**2).sum(-1)).sum())
            den["phi"] += float(w.sum())
            for A, B in groups:
                pa, pb = post[..., list(A)].sum(-1), post[..., list(B)].sum(-1)
                key = cov_split_name(A, B)
                num[key] += float((w * (pa**2 + pb**2)).sum())
                den[key] += float((w * (pa + pb) ** 2).sum())
        for key in out:
            out[key][i] = num[key] / den[key]
    return out


def cov_crossing(d: int, var, means, weights, group=None, t_max: float = 20.0) -> float:
    """The time at which the exact phi (or the split ``group`` = (A, B)) crosses
    :data:`PHI_AT_T_S`: the finite-d speciation time of the quadrature (NaN if never)."""
    key = "phi" if group is None else cov_split_name(*group)
    groups = [] if group is None else [group]
    f = lambda t: cov_phi(np.array([t]), d, var, means, weights, groups)[key][0] - PHI_AT_T_S  # noqa: E731
    grid = np.linspace(0.0, t_max, 81)[1:]
    vals = cov_phi(grid, d, var, means, weights, groups)[key] - PHI_AT_T_S
    idx = np.nonzero(vals[:-1] * vals[1:] <= 0)[0]
    if not len(idx):
        return float("nan")
    i = idx[-1]
    return float(_scipy().optimize.brentq(f, grid[i], grid[i + 1], xtol=1e-10))


def cov_excess_entropy(t: np.ndarray, n: int, d: int, var, weights) -> np.ndarray:
    """Excess entropy ``f(t) = log(n)/d + 1/2 log Delta_t - sum_c pi_c 1/2 log Gamma_c`` (the
    entropy of P_t per dimension with the classes' mixing entropy, at most log(K)/d, left out)."""
    t = np.asarray(t, dtype=np.float64)
    g = np.asarray(var)[None, :] * np.exp(-2 * t)[:, None] + (-np.expm1(-2 * t))[:, None]
    return alpha(n, d) + 0.5 * np.log(-np.expm1(-2 * t)) - 0.5 * (np.asarray(weights)[None] * np.log(g)).sum(1)


def cov_collapse_time(n: int, d: int, var, weights) -> float:
    """The zero of :func:`cov_excess_entropy` (``t_C``)."""
    f = lambda t: float(cov_excess_entropy(np.array([t]), n, d, var, weights)[0])  # noqa: E731
    lo, hi = 1e-9, 1.0
    while f(hi) < 0:
        hi *= 2
        if hi > 1e3:
            return float("nan")
    return float(_scipy().optimize.brentq(f, lo, hi, xtol=1e-12)) if f(lo) < 0 else float("nan")


def cov_check(dataset: dict) -> None:
    """The rules of a ``covariance_mixture`` dataset block that its schema cannot say (the
    schema's ``x-check``, run at validation): one line on a mismatch of lengths, two identical
    classes, or classes not told apart at this d."""
    var, means, weights = cov_class_parameters(dataset)
    first = cov_splits(int(dataset["d"]), var, means, weights)[0][2]
    if not first > 0:
        raise InputError(f"no two classes are told apart at d = {dataset['d']} (the first split's closed-form "
                         "t_S is not > 0): raise d or the differences between the classes' variances or means")


def _scipy():
    """scipy's optimize and stats, imported on first use (the config layer imports this module)."""
    import scipy
    import scipy.optimize
    import scipy.stats
    return scipy
