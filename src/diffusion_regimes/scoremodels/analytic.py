"""The analytic score models: ``exact`` (the data model's exact score) and ``empirical``
(the exact score of the training points' empirical measure)."""

from __future__ import annotations

from . import ScoreModel, register


@register
class Exact(ScoreModel):
    """The exact score of a solvable data model's population (the control: it cannot memorise)."""

    name = "exact"
    needs = "solvable"

    @classmethod
    def build(cls, spec: dict, x, data_model, files: dict):
        return data_model.exact_score()


@register
class Empirical(ScoreModel):
    """:class:`diffusion_regimes.scores.EmpiricalScore` of the subset, ``block`` training
    points per block (the experiment's ``block``)."""

    name = "empirical"

    @classmethod
    def settings(cls, exp_cfg: dict) -> dict:
        return {"block": exp_cfg["block"]}

    @classmethod
    def build(cls, spec: dict, x, data_model, files: dict):
        from ..scores import EmpiricalScore

        return EmpiricalScore(x, spec["settings"]["block"])
