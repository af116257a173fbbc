"""Stages of ``workflow/rules/data.smk``: the subset and its spectrum."""

from __future__ import annotations

import logging

from .. import spectrum as spectrum_mod
from ..data import load_subset, make_subset
from ..datamodels import for_meta
from ..errors import InputError
from ..io import make_metadata, write_table
from ..seeding import Stream, generator

log = logging.getLogger("diffusion_regimes")


def subset(input: dict, output: dict, exp: str, dataset: dict, seed: int) -> None:
    """The training subset and the reference set of the memorisation null."""
    table, meta, ref, ref_meta = make_subset(dataset, generator(seed, exp, Stream.SUBSET),
                                             generator(seed, exp, Stream.REFERENCE))
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
    if require_t_S and results["Lambda"] <= 1:
        raise InputError(f"{input['data']}: the top covariance eigenvalue Lambda = {results['Lambda']:.3g} <= 1, so "
                         f"t_S = 1/2 log Lambda <= 0 and times in units of t_S are meaningless: for images raise "
                         "dataset.size (the digits need 16); otherwise give cloning.time_unit: ou and no "
                         "collapse or symmetry times")
    results.update(source=meta["source"], Lambda_paper=for_meta(meta).reference_lambda())
    write_table(table, output["spectrum"], make_metadata("spectrum", spectrum, None, results))
    log.info("spectrum: Lambda=%.4g (all channels %.4g, channel 0 %.4g) t_S=%.4g", results["Lambda"],
             results["Lambda_all"], results["Lambda_channel0"], results["t_S"])
