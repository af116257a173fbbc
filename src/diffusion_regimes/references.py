"""Reference curves of speciation computed from the data alone, beside t_S = 1/2 log Lambda.

t_S = 1/2 log Lambda is the d -> infinity prediction; at the Lambda of a real data set a model
that generalises follows the population's phi(t), which two references estimate from the
experiment's files (``data.parquet``, the training split; ``reference.parquet``, the
held-out split or fresh population draws):

- ``phi_gaussian`` (phi_G): the class-conditional Gaussian surrogate. Each class c is
  N(m_c, C_c) with the mean and covariance of its training points and weight pi_c = n_c / n;
  under the forward process it is N(e^{-t} m_c, e^{-2t} C_c + Delta_t I), whose posterior
  P(c | x_t) is exact (low rank: C_c = U diag(a) U^T from the centred points' SVD). phi_G(t) =
  E[sum_c P(c | x_t)^2] by Monte Carlo over points drawn from the surrogate and noised. For
  the two-Gaussian mixture it is the closed form, up to the covariance's estimation noise.
- ``phi_heldout`` (phi_H): the posterior under the training split's empirical measure,
  P(c | x_t) = sum_{i in c} w_i / sum_i w_i with w_i = exp(-|x_t - e^{-t} x_i|^2 / 2 Delta_t),
  at noised reference points: what a model that knows exactly these n points sees on new
  data. Below the collapse time t_C the posterior is dominated by single training points and
  phi_H no longer describes a generalising model: read it above t_C.

phi(t) = E[sum_c P(c | x_t)^2] is the probability that two independent continuations of x_t
end in the same class, the quantity cloning measures. Rows (one Monte Carlo point with its
noise draw, shared by every time) are bootstrapped jointly across times
(:func:`diffusion_regimes.cloning.agreement_table`), so the crossings of phi(t_S) (``theory.PHI_AT_T_S``)
(``t_S_gaussian``, ``t_S_heldout``) come with standard errors.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from .cloning import agreement_table
from .errors import InputError
from .schedule import delta
from .seeding import Stream, derive_seed, generator

log = logging.getLogger("diffusion_regimes")

#: summary columns (name, key of the theory table's metadata, dtype): one row per experiment
SUMMARY = (("t_S_gaussian", "t_S_gaussian", "Float64"), ("t_S_gaussian_se", "t_S_gaussian_se", "Float64"),
           ("t_S_heldout", "t_S_heldout", "Float64"), ("t_S_heldout_se", "t_S_heldout_se", "Float64"))

#: rows of a block of points evaluated at once (bounds memory to block x max(n, d) floats)
BLOCK = 512


def _posterior_square_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_c P(c)^2 (B,) from class log-weights (B, C)."""
    p = torch.softmax(logits.double(), dim=1)
    return (p * p).sum(1)


class GaussianSurrogate:
    """Per class: weight, mean (d,), orthonormal directions U (d, r) and variances a (r,)
    of the training points' covariance (r = its rank, at most n_c - 1)."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray):
        self.classes = np.unique(labels)
        if len(self.classes) < 2:
            raise InputError("the Gaussian reference needs at least two classes in the training split")
        self.d = x.shape[1]
        self.weights, self.means, self.bases, self.variances = [], [], [], []
        for c in self.classes:
            xc = x[torch.as_tensor(labels == c)].double()
            if len(xc) < 2:
                raise InputError(f"class {c} has {len(xc)} training point(s): the Gaussian reference needs two")
            m = xc.mean(0)
            _, s, vt = torch.linalg.svd(xc - m, full_matrices=False)
            a = s**2 / (len(xc) - 1)
            keep = a > a.max() * 1e-10
            self.weights.append(len(xc) / len(x))
            self.means.append(m.float())
            self.bases.append(vt[keep].T.float().contiguous())
            self.variances.append(a[keep])

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n points of the surrogate (n, d) float32 and their classes (n,) (positions in ``classes``)."""
        k = torch.multinomial(torch.tensor(self.weights), n, replacement=True, generator=gen)
        x = torch.empty(n, self.d)
        for j in range(len(self.classes)):
            rows = k == j
            g = torch.randn(int(rows.sum()), len(self.variances[j]), generator=gen, dtype=torch.float64)
            x[rows] = self.means[j] + (g * self.variances[j].sqrt()).float() @ self.bases[j].T
        return x, k

    def log_likelihoods(self, y: torch.Tensor, t: float) -> torch.Tensor:
        """log pi_c + log N(y; e^{-t} m_c, e^{-2t} C_c + Delta_t I) up to a shared constant: (B, C)."""
        dt, s2 = delta(t), math.exp(-2.0 * t)
        out = []
        for w, m, u, a in zip(self.weights, self.means, self.bases, self.variances):
            r = y - math.exp(-t) * m
            proj = (r @ u).double()  # (B, r)
            lam = a * s2 + dt  # variances along U
            quad = (r.double() ** 2).sum(1) / dt - (proj**2 * (1.0 / dt - 1.0 / lam)).sum(1)
            logdet = torch.log(lam).sum() + (self.d - len(a)) * math.log(dt)
            out.append(math.log(w) - 0.5 * (quad + logdet))
        return torch.stack(out, 1)


def gaussian_phi_rows(x: torch.Tensor, labels: np.ndarray, times: np.ndarray, n_samples: int,
                      seed: int) -> np.ndarray:
    """sum_c P(c | x_t)^2 under the class-conditional Gaussian surrogate of the training points
    x (n, d) with ``labels`` (n,): (K, n_samples) float64, one row per time of ``times`` (K,),
    each column one surrogate point and noise draw shared by every time."""
    model = GaussianSurrogate(x, labels)
    gen = generator(seed, Stream.REFERENCE_GAUSSIAN)
    x0, _ = model.sample(n_samples, gen)
    z = torch.randn(x0.shape, generator=gen)
    rows = np.empty((len(times), n_samples))
    for k, t in enumerate(times):
        for b in range(0, n_samples, BLOCK):
            y = math.exp(-t) * x0[b:b + BLOCK] + math.sqrt(delta(float(t))) * z[b:b + BLOCK]
            rows[k, b:b + BLOCK] = _posterior_square_sum(model.log_likelihoods(y, float(t))).numpy()
    return rows


def heldout_phi_rows(x: torch.Tensor, labels: np.ndarray, points: torch.Tensor, times: np.ndarray,
                     n_samples: int, seed: int) -> np.ndarray:
    """sum_c P(c | x_t)^2 under the empirical measure of the training points x (n, d) with
    ``labels`` (n,), at ``n_samples`` noised ``points`` (m, d) (cycled when m < n_samples,
    each use with its own noise): (K, n_samples) float64, columns shared by every time."""
    if len(points) == 0:
        raise InputError("the held-out reference needs reference points (dataset.holdout > 0 for images)")
    classes = np.unique(labels)
    onehot = torch.as_tensor(labels[:, None] == classes[None], dtype=torch.float64)  # (n, C)
    gen = generator(seed, Stream.REFERENCE_HELDOUT)
    order = torch.randperm(len(points), generator=gen)
    chosen = points[order[torch.arange(n_samples) % len(points)]]
    z = torch.randn(chosen.shape, generator=gen)
    sq = (x.double() ** 2).sum(1)
    rows = np.empty((len(times), n_samples))
    for k, t in enumerate(times):
        dt, s = delta(float(t)), math.exp(-float(t))
        for b in range(0, n_samples, BLOCK):
            y = (s * chosen[b:b + BLOCK] + math.sqrt(dt) * z[b:b + BLOCK]).double()
            d2 = (y**2).sum(1, keepdim=True) - 2 * s * (y @ x.double().T) + s * s * sq[None]
            w = torch.softmax(-d2 / (2 * dt), dim=1)  # (B, n)
            p = w @ onehot  # (B, C)
            rows[k, b:b + BLOCK] = (p * p).sum(1).numpy()
    return rows


def reference_curves(x: torch.Tensor, labels: np.ndarray, points: torch.Tensor, times: np.ndarray,
                     settings: dict, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """phi_G and phi_H on ``times`` with bootstrap s.e., and their crossings of ``PHI_AT_T_S``.

    ``x`` (n, d), ``labels`` (n,): the training split; ``points`` (m, d): the reference set;
    ``settings``: ``n_samples`` (Monte Carlo points per curve), ``n_bootstrap``. Returns the
    columns ``phi_gaussian``, ``phi_gaussian_se``, ``phi_heldout``, ``phi_heldout_se`` and the
    results ``t_S_gaussian``, ``t_S_heldout`` with ``_se`` and ``_missed`` (replicates that
    never cross inside ``times``)."""
    labels = np.asarray(labels)
    columns, results = {}, {}
    curves = {"gaussian": lambda: gaussian_phi_rows(x, labels, times, settings["n_samples"], seed),
              "heldout": lambda: heldout_phi_rows(x, labels, points, times, settings["n_samples"], seed)}
    for name, rows in curves.items():
        counts = np.unique(labels, return_counts=True)[1]
        missing = ("fewer than two classes" if len(counts) < 2
                   else "a class with fewer than two training points" if name == "gaussian" and counts.min() < 2
                   else "no reference points (dataset.holdout is 0)" if name == "heldout" and len(points) == 0
                   else None)
        if missing:  # null columns and results, and why in the log
            log.warning("reference curve phi_%s not computed: %s", name, missing)
            columns[f"phi_{name}"] = columns[f"phi_{name}_se"] = np.full(len(times), np.nan)
            results.update({f"t_S_{name}": None, f"t_S_{name}_se": None, f"t_S_{name}_missed": None})
            continue
        table, cross = agreement_table(np.asarray(times, dtype=np.float64), rows(), settings["n_bootstrap"],
                                       derive_seed(seed, Stream.BOOTSTRAP, name))
        columns[f"phi_{name}"] = table["phi"].to_numpy()
        columns[f"phi_{name}_se"] = table["phi_se"].to_numpy()
        results[f"t_S_{name}"] = cross["crossing"]
        results[f"t_S_{name}_se"] = cross["crossing_se"]
        results[f"t_S_{name}_missed"] = cross["crossing_missed"]
    return columns, results
