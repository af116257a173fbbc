"""Figures (matplotlib, PNG) of one experiment, read from the stage outputs.

- ``phi.png``: phi(t) against t/t_S for every score model, with the theory curve.
- ``collapse.png``: f(t)/alpha with t_C marked, the histogram of measured
  collapse times, and phi_C(t).
- ``samples.png``: image data only: one trajectory at each branch time, its
  denoised estimate there, and the final image of its clone made at that time.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import paths  # noqa: E402
from .io import atomic_path, read_metadata, read_table  # noqa: E402
from .theory import PHI_CROSSING  # noqa: E402

COLORS = {"exact": "C0", "empirical": "C1", "unet": "C2"}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def phi_figure(exp: str, scores: list[str], path: Path) -> None:
    spec = read_metadata(paths.SPECTRUM.format(exp=exp))
    t_S = spec["t_S"]
    theory, th_meta = read_table(paths.THEORY.format(exp=exp))
    fig, ax = plt.subplots(figsize=(6, 4))
    if theory["phi"].notna().any():
        ax.plot(theory["t"] / t_S, theory["phi"], "k-", lw=1.2, label=f"theory ({th_meta['model']})")
    x_max = 1.0
    for score in scores:
        tab, meta = read_table(paths.CLONING.format(exp=exp, score=score))
        m = meta["t_S_measured"]
        x_max = max(x_max, float(tab["t"].max() / t_S))
        ax.errorbar(tab["t"] / t_S, tab["phi"], yerr=[tab["phi"] - tab["phi_lo"], tab["phi_hi"] - tab["phi"]],
                    fmt="o", ms=4, capsize=2, color=COLORS.get(score),
                    label=f"{score}: $t_S$ measured {m:.3g}" if m is not None else score)
    ax.axhline(PHI_CROSSING, color="grey", ls=":", lw=1)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1.1 * x_max)
    ax.set_xlabel(r"$t / t_S$")
    ax.set_ylabel(r"$\phi(t)$: clones in the same class")
    ax.set_title(f"{exp}: speciation, Λ = {spec['Lambda']:.4g}, $t_S$ = {t_S:.3g}")
    ax.legend(fontsize=8)
    _save(fig, path)


def _grid_bins(values: np.ndarray, most: int = 40) -> np.ndarray | int:
    """Histogram edges halfway between the distinct values (collapse times lie on the
    sampler's grid), so that no bin holds two grid times; plain bins when there are many."""
    v = np.unique(values)
    if len(v) < 2 or len(v) > most:
        return min(most, max(len(v), 1))
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def collapse_figure(exp: str, scores: list[str], path: Path) -> None:
    ent, emeta = read_table(paths.ENTROPY.format(exp=exp))
    er = emeta
    alpha = er["alpha"]
    theory, tmeta = read_table(paths.THEORY.format(exp=exp))
    t_C_th = tmeta.get("t_C")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.errorbar(ent["t"], ent["f"] / alpha, yerr=ent["f_se"] / alpha, fmt="o", ms=3, label="Monte Carlo f(t)/α")
    if theory["f"].notna().any():
        ok = theory["f"].notna()
        ax.plot(theory["t"][ok], theory["f"][ok].astype(float) / alpha, "k-", lw=1.2, label="closed form")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(er["level"] / alpha, color="grey", ls=":", lw=1, label="level log(2)/(dα)")
    if er["t_C"] is not None:
        ax.axvline(er["t_C"], color="C3", ls="--", label=f"$t_C$ entropy = {er['t_C']:.3g}")
    if t_C_th is not None:
        ax.axvline(t_C_th, color="k", ls=":", label=f"$t_C$ theory = {t_C_th:.3g}")
    ax.set_xscale("log")
    ax.set_ylim(-0.3, 1.2)
    ax.set_xlabel("t")
    ax.set_ylabel("f(t) / α")
    ax.set_title(f"{exp}: excess entropy, α = {alpha:.3g}")
    ax.legend(fontsize=7)
    for score in scores:
        tab, meta = read_table(paths.COLLAPSE_TIMES.format(exp=exp, score=score))
        axes[1].hist(tab["t_collapse"], bins=_grid_bins(tab["t_collapse"].to_numpy()), alpha=0.5,
                     color=COLORS.get(score),
                     label=f"{score}: mean {meta['t_C_measured']:.3g}")
        phi_c, _ = read_table(paths.PHI_C.format(exp=exp, score=score))
        axes[2].errorbar(phi_c["t"], phi_c["phi_c"], yerr=phi_c["phi_c_se"], fmt="o-", ms=3,
                         color=COLORS.get(score), label=score)
    for ax in axes[1:]:
        if er["t_C"] is not None:
            ax.axvline(er["t_C"], color="C3", ls="--", lw=1)
        if t_C_th is not None:
            ax.axvline(t_C_th, color="k", ls=":", lw=1)
    axes[1].set_xlabel("collapse time of a trajectory")
    axes[1].set_ylabel("trajectories")
    axes[1].set_title("measured collapse times")
    axes[2].set_xlabel("t")
    axes[2].set_ylabel(r"$\phi_C(t)$: clones on the same training point")
    axes[2].set_title("collapse by cloning")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    _save(fig, path)


def samples_figure(exp: str, scores: list[str], path: Path) -> None:
    data_meta = read_metadata(paths.DATA.format(exp=exp))
    shape, mean = data_meta["shape"], np.asarray(data_meta["mean"], dtype=np.float32)
    std = np.asarray(data_meta.get("std", np.ones_like(mean)), dtype=np.float32)
    fig_rows = []
    for score in scores:
        tab, _ = read_table(paths.SNAPSHOTS.format(exp=exp, score=score))
        fig_rows.append((score, tab))
    K = int((fig_rows[0][1]["kind"] == "trunk").sum())
    fig, axes = plt.subplots(3 * len(fig_rows), K + 1, figsize=(1.2 * (K + 1), 3.9 * len(fig_rows)),
                             squeeze=False)

    def show(ax, vec):
        img = np.asarray(vec, dtype=np.float32).reshape(shape) * std[:, None, None] + mean[:, None, None]
        img = np.clip(img.transpose(1, 2, 0), 0, 1)
        ax.imshow(img[..., 0] if shape[0] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])

    for r, (score, tab) in enumerate(fig_rows):
        trunk, denoised, clones = (tab[tab["kind"] == name].sort_values("branch_t", ascending=False)
                                   for name in ("trunk", "trunk_denoised", "clone_final"))
        final = tab[tab["kind"] == "trunk_final"].iloc[0]
        for k in range(K):
            show(axes[3 * r, k], trunk["x"].iloc[k])
            axes[3 * r, k].set_title(f"t={trunk['t'].iloc[k]:.2f}", fontsize=7)
            show(axes[3 * r + 1, k], denoised["x"].iloc[k])
            show(axes[3 * r + 2, k], clones["x"].iloc[k])
        show(axes[3 * r, K], final["x"])
        axes[3 * r, K].set_title("final", fontsize=7)
        axes[3 * r + 1, K].axis("off")
        axes[3 * r + 2, K].axis("off")
        axes[3 * r, 0].set_ylabel(f"{score}\ntrajectory x(t)", fontsize=8)
        axes[3 * r + 1, 0].set_ylabel("its denoised\nE[a | x(t)]", fontsize=8)
        axes[3 * r + 2, 0].set_ylabel("clone made at t\n(final)", fontsize=8)
    fig.suptitle(f"{exp}: one trajectory, and the end of its clone made at each time", fontsize=9)
    _save(fig, path)
