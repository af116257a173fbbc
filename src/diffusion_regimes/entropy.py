"""Excess entropy of the empirical measure and the collapse time t_C.

``f(t) = log(n)/d + 1/2 + 1/2 log(2 pi Delta_t) - s(t)``, ``s(t) = -(1/d) E_{P_t}[log P_t]``
with ``P_t`` the empirical measure of the n training points. Substituting
``log P_t`` gives the Monte Carlo estimator used here,

    f(t) = 1/2 + (1/d) E[ log sum_nu exp(-|x - a_nu e^{-t}|^2 / (2 Delta_t)) ],
    x = a_mu e^{-t} + sqrt(Delta_t) z,  mu uniform, z ~ N(0, I),

with ``|z|^2/(2d) - 1/2`` (mean 0) as a control variate to cut its variance.

``f(infinity) = alpha = log(n)/d``. At finite d, f > 0 strictly (the self term
mu = nu alone gives 0 on average): the collapse time is where f crosses
``log(2)/d``, the level at which the self term and the rest of the training
set contribute equally; the level tends to 0, the criterion of the theory, as
d -> infinity.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .schedule import delta, forward_noise
from .scores import EmpiricalScore
from .seeding import Stream, generator
from .theory import crossing_time


def collapse_level(d: int) -> float:
    """Level of f(t) that defines t_C at dimension d: ``log(2)/d``."""
    return math.log(2.0) / d


def excess_entropy(train: EmpiricalScore, t_values: np.ndarray, n_samples: int, seed: int,
                   batch: int = 2048, progress: bool = True, keys: list[int] | None = None) -> pd.DataFrame:
    """Monte Carlo f(t) with standard errors, table ``t, f, f_se``.

    Cost per time point: ``n_samples * n * d`` multiply-adds, blocked over the
    training points by :class:`EmpiricalScore`, with float64 states: below t_C the estimator
    is a small difference of large terms, which float32 would round by about 1e-7,
    far more than its standard error there. Time point k draws from
    ``generator(seed, "t", keys[k])`` (``keys`` default 0, 1, ...: a shard passes
    the global indices of its time points).
    """
    keys = list(range(len(t_values))) if keys is None else keys
    rows = []
    for k, t in enumerate(tqdm(np.asarray(t_values, dtype=np.float64), desc="entropy f(t)",
                               disable=not progress)):
        dt = delta(float(t))
        gen = generator(seed, Stream.TIME_POINT, keys[k])
        vals, controls = [], []
        for b0 in range(0, n_samples, batch):
            B = min(batch, n_samples - b0)
            mu = torch.randint(0, train.n, (B,), generator=gen)
            z = torch.randn(B, train.d, generator=gen, dtype=torch.float64)
            x = forward_noise(train.a[mu].double(), float(t), z)
            lse, _, _, _ = train._scan(x, float(t), want_mean=False)
            vals.append((lse - (x**2).sum(1) / (2 * dt)) / train.d + 0.5)
            controls.append((z**2).sum(1) / (2 * train.d) - 0.5)
        f, se = _control_variate_mean(torch.cat(vals).numpy(), torch.cat(controls).numpy())
        rows.append((float(t), f, se))
    return pd.DataFrame(rows, columns=["t", "f", "f_se"])


def _control_variate_mean(v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Mean of ``v`` and its standard error, using ``w`` (known mean 0) as a control variate.

    The noise ``|z|^2/(2d) - 1/2`` of the self term dominates the variance of the
    plain estimator; subtracting its optimal multiple leaves the mean unchanged.
    """
    c = np.cov(v, w)
    beta = c[0, 1] / c[1, 1] if c[1, 1] > 0 else 0.0
    r = v - beta * w
    return float(r.mean()), float(r.std(ddof=1) / math.sqrt(len(r)))


def entropy_times(cfg: dict) -> np.ndarray:
    """The time points (n_t,) of the Monte Carlo f(t): geometric from ``t_min`` to ``t_max``."""
    return np.geomspace(cfg["t_min"], cfg["t_max"], cfg["n_t"])


def entropy_collapse_time(table: pd.DataFrame, d: int, factor: float = 1.0) -> float:
    """t_C: where the measured f(t) crosses ``factor`` times :func:`collapse_level` (NaN if it
    does not). The level is a finite-d convention: ``factor`` 1/2 and 2 give its band."""
    return crossing_time(table["t"].to_numpy(), table["f"].to_numpy(), factor * collapse_level(d))


# ----------------------------------------------------------------------------- the measurement
#: summary columns (name, key of the gathered metadata, dtype): one row per experiment
SUMMARY = (("t_C_entropy", "t_C", "Float64"), ("t_C_entropy_lo", "t_C_lo", "Float64"),
           ("t_C_entropy_hi", "t_C_hi", "Float64"))


def shard(x: torch.Tensor, entropy: dict, block: int, seed: int, shard: int = 0,
          progress: bool = True) -> tuple[pd.DataFrame, list[int]]:
    """The time points of shard ``shard`` of ``entropy.shards`` of the Monte Carlo f(t):
    (table, the indices of its time points)."""
    from .seeding import shard_blocks

    keys = shard_blocks(entropy["n_t"], 1, shard, entropy.get("shards", 1))
    table = excess_entropy(EmpiricalScore(x, block), entropy_times(entropy)[keys], entropy["n_samples"], seed,
                           progress=progress, keys=keys)
    return table, keys


def gather(table: pd.DataFrame, n: int, d: int) -> dict:
    """The scalars of the gathered f(t): alpha, t_C where f crosses the collapse level, and the
    band of t_C at half and twice that level."""
    from .theory import alpha

    return {"alpha": alpha(n, d), "t_C": entropy_collapse_time(table, d),
            "t_C_lo": entropy_collapse_time(table, d, 0.5), "t_C_hi": entropy_collapse_time(table, d, 2.0),
            "level": collapse_level(d), "n": n, "d": d}
