"""Stages of ``workflow/rules/data.smk``: the subset and its spectrum."""

from __future__ import annotations

import logging

from .. import spectrum as spectrum_mod
from ..data import load_subset, make_subset
from ..datamodels import DataModel, for_meta
from ..errors import InputError
from ..io import make_metadata, write_table
from ..seeding import Stream, generator

log = logging.getLogger("diffusion_regimes")


def subset(input: dict, output: dict, exp: str, dataset: dict, seed: int) -> None:
    """The training subset and the reference set of the memorisation null, drawn from the
    master seed and the experiment's name, or from ``dataset.split_seed`` alone where given
    (the same images and split whatever the experiment is called)."""
    names = (dataset["split_seed"],) if dataset.get("split_seed") is not None else (seed, exp)
    table, meta, ref, ref_meta = make_subset(dataset, generator(*names, Stream.SUBSET),
                                             generator(*names, Stream.REFERENCE))
    meta["split_seed"] = ref_meta["split_seed"] = dataset.get("split_seed")
    write_table(table, output["data"], make_metadata("subset", {"dataset": dataset}, seed, meta))
    write_table(ref, output["reference"], make_metadata("subset", {"dataset": dataset}, seed, ref_meta))
    log.info("subset: n=%d d=%d classes=%s; reference (%s) n=%d", meta["n"], meta["d"], meta["class_counts"],
             meta["reference"], ref_meta["n"])


def spectrum(input: dict, output: dict, spectrum: dict, require_t_S: bool = True) -> None:
    """The covariance spectrum (:func:`diffusion_regimes.spectrum.measure`). With
    ``require_t_S`` (the experiment measures in units of t_S), Lambda <= 1 is refused here,
    before any network is trained: t_S = 1/2 log Lambda would be <= 0."""
    x, _, meta = load_subset(input["data"])
    table, results = spectrum_mod.measure(x, tuple(meta["shape"]), spectrum)
    model = for_meta(meta)
    results.update(t_S_half_log_Lambda=results["t_S"], t_S=model.speciation_time(results["Lambda"]),
                   t_S_rule=model.speciation_rule)
    if require_t_S and not results["t_S"] > 0:
        why = (f"the top covariance eigenvalue Lambda = {results['Lambda']:.3g} <= 1, so t_S = 1/2 log Lambda <= 0"
               if model.speciation_rule == DataModel.speciation_rule else
               f"the closed-form t_S of {meta['source']} is {results['t_S']:.3g}, not > 0")
        raise InputError(f"{input['data']}: {why}, and times in units of t_S are meaningless: for images raise "
                         "dataset.size (the digits need 16); otherwise give cloning.time_unit: ou and no "
                         "collapse or symmetry times")
    results.update(source=meta["source"], Lambda_paper=model.reference_lambda())
    write_table(table, output["spectrum"], make_metadata("spectrum", spectrum, None, results))
    log.info("spectrum: Lambda=%.4g (all channels %.4g, channel 0 %.4g) t_S=%.4g", results["Lambda"],
             results["Lambda_all"], results["Lambda_channel0"], results["t_S"])
