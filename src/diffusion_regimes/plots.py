"""Figures (matplotlib, PNG) of one experiment, read from the stage outputs.

- ``phi.png``: phi(t) against t/t_S for every score model, with the theory curve.
- ``collapse.png``: f(t)/alpha with t_C marked, the histogram of measured
  collapse times, and phi_C(t).
- ``samples.png``: image data only: one trajectory at each branch time, its
  denoised estimate there, and the final image of its clone made at that time.
- ``symmetry.png`` (Gaussian mixture, when enabled): the potential V(q, t) at
  times around t_S beside the histograms of q over sampled trajectories.

Figures of a group of experiments (a grid over d or beta), in
``results/figures/groups/{group}/``: ``speciation.png`` (phi against t/t_S for every
member, with the closed forms) and ``collapse.png`` (f(t)/alpha for every member,
with the closed forms and t_C marked).

The memorisation study: ``memorisation.png`` per experiment (memorised fraction, sample
quality and generalisation gap against training steps) and, per group of n,
``memorised_fraction.png``, ``tau.png`` (tau_mem and tau_gen against n, with the fit),
``nearest.png`` (samples beside their nearest training points) and
``collapse_entropy.png`` (measured collapse time against the entropy's t_C).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import InputError  # noqa: E402
from .io import atomic_path, read_metadata, read_table  # noqa: E402
from .theory import PHI_AT_T_S, gm_potential, gm_projection_density  # noqa: E402

COLORS = {"exact": "C0", "empirical": "C1", "unet": "C2", "external": "C3", "mlp": "C4"}


def score_color(score: str) -> str:
    """The colour of a score model in every figure: the built-in ones fixed, any other (a
    plugin's) a stable colour of the cycle from its name."""
    if score in COLORS:
        return COLORS[score]
    return f"C{5 + sum(score.encode()) % 5}"


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _value(x) -> float | None:
    """A metadata number, or None when it is missing or NaN (drawn and labelled as missing)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _legend_below(ax) -> None:
    """The legend under the axes, where it cannot cover data."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), borderaxespad=0, frameon=False)


def _levels(columns) -> list[str]:
    """Extra levels of class agreement in a table: ``phi_{level}`` columns (not their errors,
    nor the classifier-corrected phi)."""
    return [c[4:] for c in columns if c.startswith("phi_") and c[4:] not in ("se", "lo", "hi", "corrected")
            and c[4:] not in REFERENCES and not c.endswith(("_se", "_lo", "_hi"))]


#: the reference curves from the data (references.py): column suffix -> legend
REFERENCES = {"gaussian": r"$\phi_G$: class-conditional Gaussians of the data",
              "heldout": r"$\phi_H$: training posterior at noised held-out points (above $t_C$)"}


def _time_unit(t_S: float) -> tuple[float, str]:
    """Times are drawn in units of t_S; data without a speciation regime (t_S <= 0) in OU time."""
    return (t_S, r"$t / t_S$") if t_S > 0 else (1.0, "t (OU time; t_S <= 0)")


def phi_figure(exp: str, spectrum: str, theory: str, cloning: dict[str, str], path: Path,
               uturn: dict[str, str] | None = None) -> None:
    """phi(t) against t/t_S: the cloning table of each score model (``cloning``: score ->
    path) with its 95 % interval, the closed form where there is one, phi(t_S) and t_S, the
    data model's extra levels of agreement (e.g. super-class and class within it), and the
    U-turns' phi_U(t) (``uturn``: score -> path) where the experiment has them."""
    spec = read_metadata(spectrum, "spectrum")
    t_S = spec["t_S"]
    unit, xlabel = _time_unit(t_S)
    tables = {score: read_table(p, stage="cloning") for score, p in cloning.items()}
    theory, th_meta = read_table(theory, stage="theory")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if theory["phi"].notna().any():
        ax.plot(theory["t"] / unit, theory["phi"], "k-", lw=1.2, label=f"theory ({th_meta['model']})")
    for (ref, text), color in zip(REFERENCES.items(), ("tab:olive", "tab:cyan")):
        if f"phi_{ref}" in theory and theory[f"phi_{ref}"].notna().any():
            ok = theory[f"phi_{ref}"].notna()
            t_ref, y, se = theory["t"][ok] / unit, theory[f"phi_{ref}"][ok], theory[f"phi_{ref}_se"][ok]
            cross = th_meta.get(f"t_S_{ref}")
            ax.plot(t_ref, y, color=color, lw=1.2, label=text + (f", crosses at {cross:.3g}" if cross else ""))
            ax.fill_between(t_ref, y - 2 * se, y + 2 * se, color=color, alpha=0.2, lw=0)
    x_max = 1.0
    for score, (tab, meta) in tables.items():
        m = _value(meta["t_S_measured"])
        x_max = max(x_max, float(tab["t"].max() / unit))
        ax.errorbar(tab["t"] / unit, tab["phi"], yerr=[tab["phi"] - tab["phi_lo"], tab["phi_hi"] - tab["phi"]],
                    fmt="o", ms=4, capsize=2, color=score_color(score),
                    label=f"{score}: $t_S$ measured {m:.3g}" if m is not None else f"{score}: $t_S$ not crossed")
    for score, (tab, meta) in tables.items():  # classes from a classifier: corrected for its held-out error
        if "phi_corrected" in tab:
            c = meta.get("t_S_measured_corrected")
            ax.errorbar(tab["t"] / unit, tab["phi_corrected"], yerr=tab["phi_corrected_se"], fmt="D", ms=3,
                        mfc="none", capsize=2, color=score_color(score),
                        label=f"{score}, corrected for the classifier's error {meta['label_error']:.3f}: "
                              f"$t_S$ {c:.3g}" if c is not None else f"{score}, corrected")
    styles, markers = ["--", "-.", ":"], ["s", "^", "v", "D"]
    for k, level in enumerate(_levels(theory.columns)):
        ax.plot(theory["t"] / unit, theory[f"phi_{level}"], "k", ls=styles[k % 3], lw=1, label=f"theory, {level}")
        t_level = th_meta.get(f"t_S_{level}_population")
        if t_level is not None and t_level != th_meta.get("t_S_population"):
            ax.axvline(t_level / unit, color="grey", ls=styles[k % 3], lw=1,
                       label=f"$t_S$ of {level} = {t_level:.3g}")
    for score, (tab, meta) in tables.items():
        for k, level in enumerate(_levels(tab.columns)):
            crossing = meta.get(f"t_S_{level}_measured")
            ax.errorbar(tab["t"] / unit, tab[f"phi_{level}"], yerr=tab[f"phi_{level}_se"], fmt=markers[k % 4],
                        ms=4, capsize=2, mfc="none", color=score_color(score),
                        label=f"{score}, {level}: $t_S$ measured "
                              + (f"{crossing:.3g}" if crossing is not None else "(no crossing)"))
    for score, p in (uturn or {}).items():  # phi_U: its closed form is phi's (the same curve)
        tab, meta = read_table(p, stage="uturn")
        m = _value(meta["t_U_measured"])
        x_max = max(x_max, float(tab["t"].max() / unit))
        ax.errorbar(tab["t"] / unit, tab["phi"], yerr=[tab["phi"] - tab["phi_lo"], tab["phi_hi"] - tab["phi"]],
                    fmt="^", ms=5, mfc="none", capsize=2, color=score_color(score),
                    label=f"{score}, U-turn $\\phi_U$: crosses at {m:.3g}" if m is not None
                    else f"{score}, U-turn $\\phi_U$: $t_U$ not crossed")
    ax.axhline(PHI_AT_T_S, color="grey", ls=":", lw=1, label=f"φ($t_S$) = {PHI_AT_T_S:.4f}")
    if t_S > 0:
        rule = spec.get("t_S_rule", "1/2 log Lambda")
        label = (f"$t_S$ = ½ log Λ = {t_S:.3g}" if rule == "1/2 log Lambda" else
                 f"$t_S$ = {t_S:.3g} ({rule}; ½ log Λ = {spec['t_S_half_log_Lambda']:.3g})")
        ax.axvline(1.0, color="grey", ls="--", lw=1, label=label)
    ax.set_xlim(0, 1.1 * x_max)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"$\phi(t)$: clones in the same class" + (r"; $\phi_U$: class kept" if uturn else ""))
    ax.set_title(f"{exp}: speciation, Λ = {spec['Lambda']:.4g}, $t_S$ = {t_S:.3g}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the points
    fig.tight_layout()
    _save(fig, path)


def _grid_bins(values: np.ndarray, most: int = 40) -> np.ndarray | int:
    """Histogram edges halfway between the distinct values (collapse times lie on the
    sampler's grid), so that no bin holds two grid times; plain bins when there are many."""
    v = np.unique(values)
    if len(v) < 2 or len(v) > most:
        return min(most, max(len(v), 1))
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def _f_over_alpha(ax, ent, theory, alpha: float, color, line_color, label: str) -> None:
    """Monte Carlo f(t)/alpha with standard errors, and the closed form where there is one."""
    ax.errorbar(ent["t"], ent["f"] / alpha, yerr=ent["f_se"] / alpha, fmt="o", ms=3, capsize=2, color=color,
                label=label)
    if theory["f"].notna().any():
        ok = theory["f"].notna()
        ax.plot(theory["t"][ok], theory["f"][ok].astype(float) / alpha, color=line_color, lw=1.2,
                label="closed form" if line_color != color else None)


def _f_axes(ax, title: str, ylim: tuple[float, float]) -> None:
    """Axes of an f(t)/alpha plot: log t, the zero line, labels, legend."""
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(*ylim)
    ax.set_xlabel("t")
    ax.set_ylabel("f(t) / α")
    ax.set_title(title)
    _legend_below(ax)


def collapse_figure(exp: str, entropy: str, theory: str, collapse: dict[str, str], phi_c: dict[str, str],
                    path: Path) -> None:
    """Four panels: f(t)/alpha with the entropy's t_C and its band over 1/2 ... 2 times the
    level, and the closed forms (d -> infinity and finite d) where there are; for each score
    model (``collapse``, ``phi_c``: score -> path) the collapse times of its trajectories
    (solid) beside the null against the reference set (step), the memorised fraction
    (d1/d2 < 1/3) of its final samples with the null's, and phi_C(t)."""
    scores = list(collapse)
    ent, er = read_table(entropy, stage="entropy")
    alpha = er["alpha"]
    theory, tmeta = read_table(theory, stage="theory")
    t_C_th, t_C_fd = tmeta.get("t_C"), tmeta.get("t_C_finite_d")
    fig, axes = plt.subplots(1, 4, figsize=(19, 4)) if scores else plt.subplots(1, 1, figsize=(6, 4))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    _f_over_alpha(ax, ent, theory, alpha, "C0", "k", "Monte Carlo f(t)/α")
    ax.axhline(er["level"] / alpha, color="grey", ls=":", lw=1, label="level log(2)/(dα)")
    if er.get("t_C_lo") is not None and er.get("t_C_hi") is not None:
        ax.axvspan(er["t_C_lo"], er["t_C_hi"], color="C3", alpha=0.12, label="level × ½ … 2")
    if er["t_C"] is not None:
        ax.axvline(er["t_C"], color="C3", ls="--", label=f"$t_C$ entropy = {er['t_C']:.3g}")
    if t_C_th is not None:
        ax.axvline(t_C_th, color="k", ls=":", label=f"$t_C$ closed form, d → ∞ = {t_C_th:.3g}")
    if t_C_fd is not None:
        ax.axvline(t_C_fd, color="k", ls="-.", lw=1, label=f"$t_C$ closed form, finite d = {t_C_fd:.3g}")
    _f_axes(ax, f"{exp}: excess entropy, α = {alpha:.3g}", (-0.3, 1.2))
    if not scores:
        _save(fig, path)
        return
    names, fractions, errors, nulls = [], [], [], []
    for score in scores:
        tab, meta = read_table(collapse[score], stage="collapse")
        color = score_color(score)
        bins = _grid_bins(np.concatenate([tab["t_collapse"].to_numpy(), tab["t_collapse_null"].dropna().to_numpy()]))
        axes[1].hist(tab["t_collapse"], bins=bins, alpha=0.45, color=color,
                     label=f"{score}: mean {meta['t_C_measured']:.3g}")
        if tab["t_collapse_null"].notna().any():
            axes[1].hist(tab["t_collapse_null"].dropna(), bins=bins, histtype="step", lw=1.4, color=color,
                         label=f"{score}, null (reference set): mean {meta['t_C_null']:.3g}")
        names.append(score)
        fractions.append(meta["memorised_fraction"])
        errors.append(meta["memorised_fraction_se"] or 0.0)
        nulls.append(meta["memorised_fraction_null"])
        pc, _ = read_table(phi_c[score], stage="collapse")
        axes[3].errorbar(pc["t"], pc["phi_c"], yerr=pc["phi_c_se"], fmt="o-", ms=3, color=color, label=score)
    pos = np.arange(len(names))
    axes[2].bar(pos - 0.2, fractions, 0.4, yerr=errors, capsize=3, color=[score_color(n) for n in names],
                label="training set")
    axes[2].bar(pos + 0.2, nulls, 0.4, color="none", edgecolor="k", label="null: reference set")
    axes[2].set_xticks(pos, names)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_ylabel("memorised fraction (d₁/d₂ < 1/3)")
    axes[2].set_title("memorisation of the final samples")
    for k, (frac, null) in enumerate(zip(fractions, nulls)):  # the values, so that a zero reads as zero
        axes[2].text(k - 0.2, (frac or 0.0) + 0.02, "-" if frac is None else f"{frac:.3f}", ha="center", fontsize=7)
        axes[2].text(k + 0.2, (null or 0.0) + 0.02, "-" if null is None else f"{null:.3f}", ha="center", fontsize=7)
    axes[2].axhline(0, color="k", lw=0.8)
    for ax in (axes[1], axes[3]):
        if er["t_C"] is not None:
            ax.axvline(er["t_C"], color="C3", ls="--", lw=1, label=f"$t_C$ entropy = {er['t_C']:.3g}")
        if t_C_th is not None:
            ax.axvline(t_C_th, color="k", ls=":", lw=1, label=f"$t_C$ closed form, d → ∞ = {t_C_th:.3g}")
    axes[1].set_xlabel("collapse time of a trajectory")
    axes[1].set_ylabel("trajectories")
    axes[1].set_title("collapse times, and their null")
    axes[3].set_xlabel("t")
    axes[3].set_ylabel(r"$\phi_C(t)$: clones on the same training point")
    axes[3].set_title("collapse by cloning")
    for ax in axes:
        _legend_below(ax)
    _save(fig, path)


def _show_sample(ax, vec, data_meta: dict, vmax: float | None = None) -> None:
    """One sample in a panel: an image (un-centred, mapped back from the data's pixel range and
    clipped to [0, 1]) for image data, else
    its coordinates as a strip of colours (symmetric range ``vmax``)."""
    shape = data_meta["shape"]
    v = np.asarray(vec, dtype=np.float32)
    if len(shape) == 3:
        mean = np.asarray(data_meta["mean"], dtype=np.float32)
        std = np.asarray(data_meta.get("std", np.ones_like(mean)), dtype=np.float32)
        lo, hi = data_meta.get("pixel_range", (0.0, 1.0))
        img = (v.reshape(shape) * std[:, None, None] + mean[:, None, None] - lo) / (hi - lo)
        img = np.clip(img.transpose(1, 2, 0), 0, 1)
        ax.imshow(img[..., 0] if shape[0] == 1 else img, cmap="gray", vmin=0, vmax=1)
    else:
        lim = vmax or float(np.abs(v).max() or 1.0)
        ax.imshow(v[None, :], cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])


def samples_figure(exp: str, data: str, snapshots: dict[str, str], path: Path) -> None:
    """One trajectory of each score model (``snapshots``: score -> path) at each branch time,
    its denoised estimate there, and the final image of its clone made there."""
    data_meta = read_metadata(data, "subset")
    fig_rows = []
    for score, p in snapshots.items():
        tab, _ = read_table(p, stage="cloning")
        kinds = set(tab["kind"]) if "kind" in tab else set()
        if not {"trunk", "trunk_denoised", "clone_final", "trunk_final"} <= kinds:
            raise InputError(f"{p}: no snapshot of pair 0 (kinds {sorted(kinds)}); delete it and re-run the "
                             f"cloning of {score}")
        fig_rows.append((score, tab))
    K = int((fig_rows[0][1]["kind"] == "trunk").sum())
    fig, axes = plt.subplots(3 * len(fig_rows), K + 1, figsize=(1.2 * (K + 1), 3.9 * len(fig_rows)),
                             squeeze=False)

    def show(ax, vec):
        _show_sample(ax, vec, data_meta)

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


def symmetry_figure(exp: str, symmetry: str, path: Path) -> None:
    """V(q, t) at the sampled times, beside the histograms of q with the exact density of q under P_t."""
    tab, meta = read_table(symmetry, stage="symmetry")
    d, mu, sigma, t_S = meta["d"], meta["mu_tilde"], meta["sigma"], meta["t_S"]
    times = np.unique(tab["t"].to_numpy())[::-1]
    wells = 2 * mu**2 * np.sqrt(d) * np.exp(-times.min())  # outermost minimum of V at the earliest time
    span = 1.15 * max(float(np.abs(tab["q"]).max()), wells)
    q = np.linspace(-span, span, 801)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis")
    tops = []
    for k, t in enumerate(times):
        color = cmap(k / max(len(times) - 1, 1))
        v = gm_potential(q, t, d, mu, sigma)
        v = v - v.min()
        tops.append(v[np.abs(q) < wells].max() if np.any(np.abs(q) < wells) else v.max())
        axes[0].plot(q, v, color=color, label=f"t/t_S = {t / t_S:.2f}")
        sample = tab["q"][tab["t"] == t].to_numpy()
        axes[1].hist(sample, bins=60, density=True, histtype="step", color=color, lw=1.3,
                     label=f"t/t_S = {t / t_S:.2f}")
        axes[1].plot(q, gm_projection_density(q, t, d, mu, sigma), color=color, ls=":", lw=1.2)
    axes[0].set_ylim(0, 1.2 * max(tops))
    axes[0].set_xlabel(r"$q = x\cdot m/\sqrt{d}$")
    axes[0].set_ylabel(r"$V(q, t) - \min_q V$")
    axes[0].set_title(f"{exp}: potential V(q, t), $t_S$ = {t_S:.3g}", fontsize=10)
    axes[1].set_xlabel("q")
    axes[1].set_ylabel("density")
    axes[1].set_title("q of sampled trajectories (dotted: exact density under $P_t$)", fontsize=10)
    for ax in axes:
        ax.legend(fontsize=7)
    _save(fig, path)


def _member_label(meta: dict, grid_keys: Sequence[str], exp: str = "") -> str:
    """The values of the grid keys of a member of a group, from its subset's metadata, and
    its run when the member is one of several runs of the same values (``{name}_r{k}``)."""
    names = {"beta": "β"}
    label = ", ".join(f"{names.get(k, k)} = {meta[k]:g}" for k in grid_keys if meta.get(k) is not None)
    run = re.search(r"_r(\d+)$", exp)
    return label + (f", run {run.group(1)}" if run else "")


def group_speciation_figure(group: str, files: dict[str, dict], scores: dict[str, str], path: Path,
                            grid_keys: Sequence[str] = ()) -> None:
    """phi against t/t_S for every member (``files``: member -> its data, spectrum, theory
    and cloning paths; ``scores``: member -> the score model of that cloning table), the
    closed form of each member where there is one, the line phi(t_S) and t/t_S = 1."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("plasma")
    specs = {exp: read_metadata(f["spectrum"], "spectrum") for exp, f in files.items()}
    ou = any(spec["t_S"] <= 0 for spec in specs.values())  # a member without speciation: all in OU time
    x_max = 0.0
    for k, (exp, f) in enumerate(files.items()):
        color = cmap(k / max(len(files), 1))
        data = read_metadata(f["data"], "subset")
        t_S = specs[exp]["t_S"]
        unit = 1.0 if ou else t_S
        theory, _ = read_table(f["theory"], stage="theory")
        if theory["phi"].notna().any():
            ax.plot(theory["t"] / unit, theory["phi"], color=color, lw=1)
        score = scores[exp]
        tab, meta = read_table(f["cloning"], stage="cloning")
        label = f"{_member_label(data, grid_keys, exp)} ({score})"
        ax.errorbar(tab["t"] / unit, tab["phi"], yerr=tab["phi_se"], fmt="o", ms=3.5, capsize=2, color=color,
                    label=label + f": $t_S$ = {t_S:.3g}")
        x_max = max(x_max, float(tab["t"].max() / unit))
    ax.axhline(PHI_AT_T_S, color="grey", ls=":", lw=1, label=f"φ($t_S$) = {PHI_AT_T_S:.4f}")
    if not ou:
        ax.axvline(1.0, color="grey", ls="--", lw=1, label=r"$t = t_S$ (each member's theory $t_S$)")
    ax.set_xlim(0, 1.2 * x_max)  # the measured range (the closed forms run on to theory.t_max)
    ax.set_xlabel(_time_unit(-1.0)[1] if ou else r"$t / t_S$")
    ax.set_ylabel(r"$\phi(t)$: clones in the same class")
    ax.set_title(f"{group}: speciation (lines: closed form)")
    _legend_below(ax)
    _save(fig, path)


def group_collapse_figure(group: str, files: dict[str, dict], path: Path, grid_keys: Sequence[str] = ()) -> None:
    """f(t)/alpha with Monte Carlo error bars for every member (``files``: member -> its data,
    entropy and theory paths), the closed form where there is one, and its
    t_C = 1/2 log(1 + s^2/(n^{2/d} - 1)) marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("plasma")
    marked = False
    for k, (exp, f) in enumerate(files.items()):
        color = cmap(k / max(len(files), 1))
        ent, emeta = read_table(f["entropy"], stage="entropy")
        theory, tmeta = read_table(f["theory"], stage="theory")
        data = read_metadata(f["data"], "subset")
        alpha = emeta["alpha"]
        _f_over_alpha(ax, ent, theory, alpha, color, color,
                      f"{_member_label(data, grid_keys, exp)}: α = {alpha:.3g}")
        if tmeta.get("t_C") is not None:
            ax.axvline(tmeta["t_C"], color=color, ls="--", lw=1,
                       label=None if marked else "dashed: the closed form's $t_C$ (member's colour)")
            marked = True
    _f_axes(ax, f"{group}: collapse (lines: closed form; dashed: its $t_C$)", (-0.1, 1.1))
    _save(fig, path)


# ----------------------------------------------------------------------------- memorisation study
def _g(value) -> str:
    """A number for a label (None, as JSON writes NaN: 'n/a')."""
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3g}"


def _n_axis(ax, n) -> None:
    """A log axis of training-set sizes, labelled at the sizes themselves."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(list(n), [f"{int(v)}" for v in n])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _mark(ax, x, color: str, label: str) -> None:
    if x is not None and np.isfinite(x):
        ax.axvline(x, color=color, ls="--", lw=1, label=label)


def memorisation_figure(exp: str, curve: str, loss: str, path: Path) -> None:
    """Against training steps (log): the memorised fraction (and its null) with tau_mem, the
    quality distance with tau_gen and the training set's own distance, and the held-out minus
    training denoising loss per noise level."""
    from .memorisation import bootstrap_interval

    tab, meta = read_table(curve, stage="memorisation")
    per_t, _ = read_table(loss, stage="memorisation")
    meta["tau_mem_lo"], meta["tau_mem_hi"] = bootstrap_interval(meta["tau_mem_replicates"])  # JSON has no inf
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.errorbar(tab["step"], tab["memorised_fraction"], yerr=tab["memorised_fraction_se"], marker="o", ms=3,
                capsize=2, label="memorised (d1/d2 < 1/3)")
    ax.plot(tab["step"], tab["memorised_fraction_null"], "k:", label="against the reference set (null)")
    ax.axhline(meta["threshold"], color="gray", lw=0.8)
    _mark(ax, meta["tau_mem"], "C3", f"tau_mem = {_g(meta['tau_mem'])} [{_g(meta['tau_mem_lo'])}, "
          f"{_g(meta['tau_mem_hi'])}]")
    ax.set(xscale="log", xlabel="training step", ylabel="memorised fraction", ylim=(-0.03, 1.03),
           title=f"{exp} (n = {meta['n']})")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.errorbar(tab["step"], tab["quality"], yerr=2 * tab["quality_se"], marker="o", ms=3, capsize=2,
                label="generated vs held-out (2 s.e.)")
    if meta["quality_training_set"] is not None:
        ax.axhline(meta["quality_training_set"], color="C1", ls=":", label="training set vs held-out")
    _mark(ax, meta["tau_gen"], "C2", f"tau_gen = {_g(meta['tau_gen'])}")
    ax.set(xscale="log", xlabel="training step", ylabel="MMD$^2$ (Gaussian kernel)", title="sample quality")
    ax.set_yscale("symlog", linthresh=max(1e-4, float(np.nanmax(np.abs(tab["quality_se"]))) if len(tab) else 1e-4))
    ax.legend(fontsize=7)
    ax = axes[2]
    for i, (t, part) in enumerate(per_t.groupby("t")):
        gap = part["loss_heldout"] - part["loss_train"]
        se = np.sqrt(part["loss_heldout_se"] ** 2 + part["loss_train_se"] ** 2)
        ax.errorbar(part["step"], gap, yerr=se, marker="o", ms=3, capsize=2, color=f"C{i}", label=f"t = {t:g}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xscale="log", xlabel="training step", ylabel="held-out - training loss", title="generalisation gap")
    ax.legend(fontsize=7)
    _save(fig, path)


def memorised_fraction_figure(group: str, curves: dict[str, str], path: Path) -> None:
    """The memorised fraction against training steps (log), one curve per n of the group."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    members = sorted(((read_table(p, stage="memorisation"), e) for e, p in curves.items()),
                     key=lambda item: item[0][1]["n"])
    cmap = plt.get_cmap("viridis")
    threshold = None
    for i, ((tab, meta), exp) in enumerate(members):
        color = cmap(i / max(1, len(members) - 1))
        ax.errorbar(tab["step"], tab["memorised_fraction"], yerr=tab["memorised_fraction_se"], marker="o", ms=3,
                    capsize=2, color=color, label=_member_label(meta, ("n",), exp))
        threshold = meta["threshold"]
    if threshold is not None:
        ax.axhline(threshold, color="gray", lw=0.8, ls="--", label=f"threshold {threshold:g}")
    ax.set(xscale="log", xlabel="training step", ylabel="memorised fraction (d1/d2 < 1/3)", ylim=(-0.03, 1.03),
           title=f"{group}: memorisation against training time")
    _legend_below(ax)
    _save(fig, path)


def tau_figure(group: str, table, fit: dict, path: Path) -> None:
    """tau_mem (95 % bootstrap interval) and tau_gen against n, log-log, with the fit."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    n = table["n"].to_numpy(dtype=float)
    tau = table["tau_mem"].to_numpy(dtype=float)
    lo, hi = table["tau_mem_lo"].to_numpy(dtype=float), table["tau_mem_hi"].to_numpy(dtype=float)
    top = float(np.nanmax(np.where(np.isfinite(hi), hi, tau))) if np.isfinite(tau).any() else 1.0
    hi_drawn = np.where(np.isfinite(hi), hi, 2 * top)  # an open interval is drawn to the frame
    ok = np.isfinite(tau)
    lo_drawn = np.where(np.isfinite(lo), lo, tau)
    yerr = np.maximum(0.0, [tau[ok] - lo_drawn[ok], hi_drawn[ok] - tau[ok]])  # a percentile interval may miss tau
    ax.errorbar(n[ok], tau[ok], yerr=yerr, fmt="o", capsize=3, color="C3", label="tau_mem (95 % bootstrap)")
    left = ok & (table["tau_mem_censored"].to_numpy() == "left")
    if left.any():
        ax.plot(n[left], tau[left], "v", color="C3", ms=9, mfc="none", label="upper bound (first snapshot passed)")
    ax.plot(n, table["tau_gen"], "s", color="C2", label="tau_gen (quality)")
    ax.plot(n, table["tau_gen_loss"], "x", color="C2", label="lowest held-out loss")
    if np.isfinite(fit["gamma"]):
        grid = np.geomspace(n.min(), n.max(), 50)
        ax.plot(grid, fit["prefactor"] * grid ** fit["gamma"], "C3-", lw=1,
                label=f"fit: gamma = {fit['gamma']:.2f} [{fit['gamma_lo']:.2f}, {fit['gamma_hi']:.2f}]")
    _n_axis(ax, n)
    ax.set(yscale="log", xlabel="training points n", ylabel="training steps", title=group)
    _legend_below(ax)
    _save(fig, path)


def nearest_figure(group: str, members: dict[str, tuple[str, str]], path: Path) -> None:
    """Generated samples of the last snapshot beside their nearest training points, for the
    given members (experiment -> (snapshot measurement, data))."""
    from .data import load_subset

    rows = []
    for exp, (measure, data) in members.items():
        tab, meta = read_table(measure, stage="memorisation_snapshot")
        x, _, data_meta = load_subset(data)
        shown = tab[tab["sample"].notna()]
        rows.append((exp, shown, x, data_meta, meta["step"]))
    K = max([len(r[1]) for r in rows] + [1])
    fig, axes = plt.subplots(2 * len(rows), K, figsize=(1.1 * K, 2.5 * len(rows)), squeeze=False)
    for r, (exp, shown, x, data_meta, step) in enumerate(rows):
        vmax = float(np.abs(x.numpy()).max()) if len(data_meta["shape"]) == 1 else None
        for k in range(K):
            top, bottom = axes[2 * r, k], axes[2 * r + 1, k]
            if k >= len(shown):
                top.axis("off")
                bottom.axis("off")
                continue
            row = shown.iloc[k]
            _show_sample(top, row["sample"], data_meta, vmax)
            _show_sample(bottom, x[int(row["nearest_index"])].numpy(), data_meta, vmax)
            top.set_title(f"{row['d1'] / row['d2']:.2f}" + (" M" if row["memorised"] else ""), fontsize=7,
                          color="C3" if row["memorised"] else "k")
        axes[2 * r, 0].set_ylabel(f"{exp}\nstep {step}\ngenerated", fontsize=7)
        axes[2 * r + 1, 0].set_ylabel("nearest\ntraining", fontsize=7)
    fig.suptitle(f"{group}: generated samples (d1/d2; M = memorised) and their nearest training points",
                 fontsize=9)
    _save(fig, path)


def collapse_entropy_figure(group: str, table, path: Path) -> None:
    """Measured collapse time of memorised trajectories at the last snapshot against n, with
    the entropy's t_C (band) and the mixture's closed forms where there are."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    n = table["n"].to_numpy(dtype=float)
    ax.errorbar(n, table["t_C_memorised_last"], yerr=table["t_C_memorised_last_se"], fmt="o", capsize=3,
                color="C3", label="measured, memorised trajectories (last snapshot)")
    ax.plot(n, table["t_C_null_last"], "k.", label="null (reference set)")
    ent = table["t_C_entropy"].to_numpy(dtype=float)
    ax.plot(n, ent, "C0-", label="entropy t_C")
    ax.fill_between(n, table["t_C_entropy_lo"].to_numpy(dtype=float), table["t_C_entropy_hi"].to_numpy(dtype=float),
                    color="C0", alpha=0.2, label="levels 1/2 and 2x")
    if table["t_C_theory_gm_finite_d"].notna().any():
        ax.plot(n, table["t_C_theory_gm_finite_d"], "C1--", label="mixture closed form (finite d)")
    _n_axis(ax, n)
    ax.set(xlabel="training points n", ylabel="collapse time (OU)", title=group)
    ax.legend(fontsize=7)
    _save(fig, path)


def dimension_scaling_figure(group: str, table, fit: dict, path: Path) -> None:
    """Measured t_S (cloning) and t_U (U-turns) against d (log axis) with their s.e., the
    theory's t_S, ½ log Λ, and the line ¼ log d + c (c fitted to the measured t_S)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    d = table["d"].to_numpy(dtype=float)
    grid = np.geomspace(d.min(), d.max(), 100)
    ax.errorbar(d, table["t_S_measured"], yerr=table["t_S_measured_se"], fmt="o", capsize=3, color="C0",
                label=f"$t_S$ measured (cloning): slope {_slope(fit['t_S'])} per unit log d")
    if table["t_U_measured"].notna().any():
        ax.errorbar(d * 1.04, table["t_U_measured"], yerr=table["t_U_measured_se"], fmt="s", ms=4, capsize=3,
                    color="C2", label=f"$t_U$ measured (U-turns): slope {_slope(fit['t_U'])}")
    ax.plot(d, table["t_S_theory"], "k-", lw=1, label="$t_S$ of the theory (closed form)")
    y, x = table["t_S_measured"].to_numpy(dtype=float), np.log(d)
    ok = np.isfinite(y)
    if ok.any():
        c = float(np.mean(y[ok] - 0.25 * x[ok]))
        ax.plot(grid, 0.25 * np.log(grid) + c, "C1--", lw=1, label=f"¼ log d + c (c = {c:.3f}, fitted)")
    ax.plot(d, table["t_S_half_log_Lambda"], "C3:", lw=1.5, label="½ log Λ of the sample's spectrum (grows as "
            "log(1 + √(d/n)) when d > n: sampling noise)")
    if table["t_S_half_log_Lambda_population"].notna().any():
        ax.plot(d, table["t_S_half_log_Lambda_population"], "C3-.", lw=1, label="½ log Λ of the population")
    ax.set(xscale="log", xlabel="dimension d", ylabel="speciation time (OU)", title=f"{group}: $t_S$ against d")
    _legend_below(ax)
    _save(fig, path)


def _slope(fit: dict) -> str:
    if not np.isfinite(fit.get("slope", np.nan)):
        return "-"
    se = fit.get("slope_se")
    return f"{fit['slope']:.3f}" + ("" if se is None or not np.isfinite(se) else f" ± {se:.3f}")
