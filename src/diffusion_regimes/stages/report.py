"""Stages of ``workflow/rules/report.smk``: the figures of one experiment and of a group."""

from __future__ import annotations

from pathlib import Path

from .common import by_key


def figures(input: dict, output: dict, exp: str, scores: list[str]) -> None:
    """phi(t) against the theory (and the U-turns), and the collapse figure."""
    from .. import plots

    turns = input.get("uturn") or []
    plots.phi_figure(exp, input["spectrum"], input["theory"], by_key(scores, input["cloning"], "cloning"),
                     Path(output["phi"]), by_key(scores, turns, "uturn") if len(turns) else None)
    plots.collapse_figure(exp, input["entropy"], input["theory"], by_key(scores, input["collapse"], "collapse"),
                          by_key(scores, input["phi_c"], "phi_c"), Path(output["collapse"]))


def symmetry_figure(input: dict, output: dict, exp: str) -> None:
    """The projections' histograms beside the potential V(q, t)."""
    from .. import plots

    plots.symmetry_figure(exp, input["symmetry"], Path(output["figure"]))


def group_figures(input: dict, output: dict, group: str, members: dict, grid_keys: list[str]) -> None:
    """Figures over the experiments of one group (a grid over d, n or beta): ``input`` holds,
    per member in the order of ``members``, its data, spectrum, theory, entropy and the
    cloning table of its first score model; ``grid_keys`` the dataset keys a grid may vary."""
    from .. import plots

    per_key = {key: by_key(members, input[key], key) for key in ("data", "spectrum", "theory", "entropy", "cloning")}
    files = {exp: {key: per_key[key][exp] for key in per_key} for exp in members}
    plots.group_speciation_figure(group, files, {exp: scores[0] for exp, scores in members.items()},
                                  Path(output["speciation"]), grid_keys)
    plots.group_collapse_figure(group, files, Path(output["collapse"]), grid_keys)


def group_speciation(input: dict, output: dict, group: str, members: dict) -> None:
    """t_S (and t_U) against d over a group whose members differ in d
    (:func:`diffusion_regimes.cloning.dimension_scaling`): the table and its figure."""
    from .. import plots
    from ..cloning import dimension_scaling
    from ..io import make_metadata, read_metadata, write_table

    per = {key: by_key(list(members), input[key], key) for key in ("data", "spectrum", "theory", "cloning")}
    uturns = by_key(list(members), input["uturn"], "uturn") if input.get("uturn") else {}
    read = {exp: (read_metadata(per["data"][exp], "subset"), read_metadata(per["spectrum"][exp], "spectrum"),
                  read_metadata(per["theory"][exp], "theory"), read_metadata(per["cloning"][exp], "cloning"),
                  read_metadata(uturns[exp], "uturn") if exp in uturns else None) for exp in members}
    table, results = dimension_scaling(read)
    write_table(table, output["table"], make_metadata("group_speciation", {"group": group}, None, results))
    plots.dimension_scaling_figure(group, table, results, Path(output["figure"]))


def samples(input: dict, output: dict, exp: str, scores: list[str]) -> None:
    """Samples of each score model: the trunk, its denoised estimates and the clones."""
    from .. import plots

    plots.samples_figure(exp, input["data"], by_key(scores, input["snapshots"], "snapshots"), Path(output["samples"]))


def landing(input: dict, output: dict, experiments: list[str]) -> None:
    """The report's landing section (:func:`diffusion_regimes.summary.landing_rst`): the
    headline numbers and every experiment's speciation and collapse figures."""
    from .. import summary as summary_mod
    from ..io import atomic_path, read_table

    summ, _ = read_table(input["summary"], stage="summary")
    phi, collapse = by_key(experiments, input["phi"], "phi"), by_key(experiments, input["collapse"], "collapse")
    figures = {}
    for exp in experiments:
        figures[f"{exp}: speciation, phi(t) against the theory and the data's references"] = phi[exp]
        figures[f"{exp}: collapse, the excess entropy and the trajectories"] = collapse[exp]
    with atomic_path(output["landing"]) as tmp:
        tmp.write_text(summary_mod.landing_rst(summ, figures), encoding="utf-8")
