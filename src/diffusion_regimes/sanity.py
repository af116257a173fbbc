"""The sanity check of a network score before it is measured: does it denoise the data?

Points ``a`` of the training set and of the reference set are noised to OU time t,
``x_t = e^{-t} a + sqrt(Delta_t) z``, and denoised by the model (Tweedie's estimate
``D = e^t (x_t + Delta_t F(x_t, t))``). The **denoising ratio** of a point is

    r = |D - a|^2 / |e^t x_t - a|^2  (= |z - eps_hat|^2 / |z|^2, the normalised denoising loss):

how far the model's estimate lands from the clean point, relative to how far the noisy
input was (on the data's scale, ``e^t x_t = a + sqrt(e^{2t} - 1) z``). The exact score
gives r <= 1 (it removes the noise along the directions where the data vary less than it:
r = 1/(1 + s^2) for a Gaussian of variance 1 per coordinate at noise variance s^2, nearly
1 at small noise, and far less for images, whose spectrum decays); a model fed data on
another scale than it was trained on (pixels in [-1, 1] for a model trained on [0, 1], or
uncentred for one trained centred) moves points towards its own data, an error that does
not shrink with the noise, and gives r > 1 at small noise, as does a broken model (an
estimate that ignores the noise: r >= 1).

The levels are the noise's standard deviation relative to the data's per-coordinate
standard deviation, ``sqrt(e^{2t} - 1) = level * std``. The check reads the smallest level,
where a wrong scale shows most: it fails when the mean r of the training points there
exceeds ``sanity.max_ratio`` (1.1 by default: on data that vary more than the noise in
every direction even the exact score reads just below 1) by more than 3 standard errors. For image data
the other pixel conventions ([0, 1] or [-1, 1], centred or not) are tried on the same
points: the check also fails when one of them gives less than :data:`OTHER_SCALE_FACTOR` of
the data's own ratio (the model denoises far better on another scale: a weak model trained
on [-1, 1] read 1.12 on [0, 1] centred, within the bound, and 0.26 on its own scale), and the
failure names the convention under which the model denoises best, if it passes.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch

from .bootstrap import mean_se
from .data import training_overlap
from .errors import InputError
from .sampling import tweedie
from .schedule import forward_noise
from .seeding import generator

log = logging.getLogger("diffusion_regimes")

#: noise std relative to the data's per-coordinate std; the check reads the first (smallest)
LEVELS = (0.1, 0.5)
#: standard errors by which the mean ratio must exceed ``max_ratio`` to fail
MARGIN_SE = 3.0
#: another pixel convention whose ratio is below this fraction of the own one fails the check
OTHER_SCALE_FACTOR = 0.5
#: the most points of each set denoised per level
POINTS = 256
#: the pixel conventions tried when the configured one fails (range, centred)
CONVENTIONS = (((0.0, 1.0), True), ((0.0, 1.0), False), ((-1.0, 1.0), False), ((-1.0, 1.0), True))


def noise_time(level: float, std: float) -> float:
    """The OU time at which the noise on the data's scale has std ``level * std``:
    ``e^{2t} - 1 = (level std)^2``."""
    return 0.5 * math.log1p((level * std) ** 2)


def denoising_ratios(score, a: torch.Tensor, t: float, generator: torch.Generator) -> np.ndarray:
    """Per point (B,) ``|D - a|^2 / |e^t x_t - a|^2`` of points a (B, d) noised to OU time t."""
    z = torch.randn(a.shape, generator=generator, dtype=a.dtype)
    est = tweedie(score, forward_noise(a, t, z), t)
    err = ((est - a) ** 2).sum(1)
    noise = math.expm1(2 * t) * (z**2).sum(1)
    ratios = (err / noise).double().numpy()
    if not np.isfinite(ratios).all():
        raise InputError(f"the model's score is not finite at t = {t:.4g} on data points: check the model's "
                         "files and its scale")
    return ratios


def _time_in_range(score, t: float) -> float:
    return min(max(t, float(getattr(score, "t_min", 0.0))), float(getattr(score, "t_max", math.inf)))


def _convention(meta: dict) -> tuple[tuple[float, float], bool]:
    lo, hi = meta.get("pixel_range", (0.0, 1.0))
    return (float(lo), float(hi)), bool(meta.get("centred", True))


def recode(a: torch.Tensor, meta: dict, train: torch.Tensor, convention) -> torch.Tensor:
    """Points ``a`` (B, d) of an image subset with metadata ``meta`` written in another pixel
    ``convention`` ((lo, hi), centred); ``train`` (n, d): the training split, whose mean
    centres."""
    shape = meta["shape"]
    c = shape[0]
    (lo, hi), _ = _convention(meta)
    mean = torch.as_tensor(meta["mean"], dtype=a.dtype)
    std = torch.as_tensor(meta.get("std", [1.0] * c), dtype=a.dtype)

    def raw(v: torch.Tensor) -> torch.Tensor:  # back to pixels in [0, 1], (B, C, HW)
        v = v.reshape(len(v), c, -1)
        return (v * std[None, :, None] + mean[None, :, None] - lo) / (hi - lo)

    (lo2, hi2), centred = convention
    out = lo2 + (hi2 - lo2) * raw(a)
    if centred:
        out = out - (lo2 + (hi2 - lo2) * raw(train)).mean(dim=(0, 2))[None, :, None]
    return out.reshape(len(a), -1)


def check(score, x: torch.Tensor, x_ref: torch.Tensor | None, meta: dict, name: str, seed: int,
          images: bool, max_ratio: float = 1.1) -> tuple[pd.DataFrame, dict]:
    """The denoising ratios of a score on training points x (n, d) and reference points
    x_ref (m, d) at each of :data:`LEVELS`, under the data's convention and (images) the
    others. Returns the table (``convention, set, level, t, ratio, ratio_se, points``) and
    the results; raises :class:`InputError` with one line when the mean ratio of the
    training points at the smallest level exceeds ``max_ratio`` by more than
    :data:`MARGIN_SE` standard errors under the data's own convention."""
    gen = generator(seed)  # a seed the stage derived for this stream
    pick = torch.randperm(len(x), generator=gen)[:POINTS]
    sets = {"training": x[pick]}
    if x_ref is not None and len(x_ref):
        sets["reference"] = x_ref[torch.randperm(len(x_ref), generator=gen)[:POINTS]]
    own = _convention(meta)
    conventions = [own] + ([c for c in CONVENTIONS if c != own] if images and not meta.get("standardized") else [])
    rows = []
    for conv in conventions:
        for set_name, a in sets.items():
            if not (conv == own or set_name == "training"):
                continue
            a_conv = a if conv == own else recode(a, meta, x, conv)
            std = float(a_conv.std(0).pow(2).mean().sqrt()) if conv == own else float(
                recode(x, meta, x, conv).std(0).pow(2).mean().sqrt())
            for level in LEVELS:
                t = _time_in_range(score, noise_time(level, std))
                r = denoising_ratios(score, a_conv, t, gen)
                m, se = mean_se(r)
                label = f"{list(conv[0])} {'centred' if conv[1] else 'uncentred'}" if images else "as given"
                rows.append({"convention": label,
                             "own": conv == own, "set": set_name, "level": level, "t": t, "ratio": m,
                             "ratio_se": se, "points": len(r)})
    table = pd.DataFrame(rows)
    own_rows = table[table["own"]]
    decisive = own_rows[(own_rows["set"] == "training") & (own_rows["level"] == LEVELS[0])].iloc[0]
    results = {"ratio_training": float(decisive["ratio"]), "ratio_training_se": float(decisive["ratio_se"]),
               "level": LEVELS[0], "t": float(decisive["t"]), "convention": decisive["convention"],
               "max_ratio": max_ratio,
               "passed": bool(decisive["ratio"] <= max_ratio + MARGIN_SE * decisive["ratio_se"])}
    others = table[~table["own"] & (table["level"] == LEVELS[0])]
    if len(others) and others["ratio"].min() < OTHER_SCALE_FACTOR * decisive["ratio"]:
        results["passed"] = False  # the model denoises far better on another scale
    ref_rows = own_rows[(own_rows["set"] == "reference") & (own_rows["level"] == LEVELS[0])]
    if len(ref_rows):
        results["ratio_reference"] = float(ref_rows["ratio"].iloc[0])
    if not results["passed"]:
        raise InputError(_failure(name, decisive, table, max_ratio))
    return table, results


def _failure(name: str, decisive, table: pd.DataFrame, max_ratio: float) -> str:
    """The one line of a failed check: what was seen, and the option to set."""
    seen = (f"{name}: denoising {int(decisive['points'])} training points at t = {decisive['t']:.3g} (noise "
            f"{decisive['level']:g} of the data's std) leaves them {decisive['ratio']:.3g} +- "
            f"{decisive['ratio_se']:.2g} times as far (squared) from the clean points as the noisy inputs (the "
            f"exact score gives <= 1; sanity.max_ratio {max_ratio:g})")
    if decisive["convention"] != "as given":
        seen += f" with the data as the dataset block gives them ({decisive['convention']})"
    others = table[~table["own"] & (table["level"] == LEVELS[0])].sort_values("ratio")
    if len(others) and others["ratio"].iloc[0] <= max(max_ratio, OTHER_SCALE_FACTOR * decisive["ratio"]):
        best = others.iloc[0]
        rng, centred = best["convention"].rsplit(" ", 1)
        return (f"{seen}, but {best['ratio']:.3g} with pixels in {rng} {centred}: the model was trained on that "
                f"scale; set dataset.pixel_range: {rng} and dataset.centre: {str(centred == 'centred').lower()}")
    if len(others):
        return (f"{seen}, and no other pixel convention does better: the model is broken or was trained on other "
                "data; check its files, its training and dataset.pixel_range / dataset.centre")
    return (f"{seen}: the model is broken, undertrained or was trained on other data; check its files and its "
            "training (sanity.max_ratio raises the bound, sanity.enabled: false skips the check)")


def reference_overlap(recorded: dict | None, reference: str, data: str, name: str) -> int | None:
    """How many of the images a model records it was trained on (``recorded``; None: no
    record) are in the reference set file ``reference``, the memorisation null; a warning of
    one line when any is. None without a record or for a record of another source."""
    overlap = training_overlap(recorded, reference) if recorded else None
    if overlap:
        log.warning("%s: %d of the %d images the model records it was trained on are in the reference set (%s), the "
                    "memorisation null: its null is not a null; train it on %s, or give dataset.split_seed the split "
                    "it was trained on", name, overlap, len(recorded["source_index"]), reference, data)
    return overlap
