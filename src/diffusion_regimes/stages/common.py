"""What several stages share: matching a rule's list inputs to their keys, and the score
model a job's ``score`` spec names, built on its subset."""

from __future__ import annotations

from ..datamodels import for_meta
from ..errors import InputError
from ..scoremodels import build_score


def by_key(keys, files, name: str) -> dict:
    """The declared input files of one kind matched to their keys (experiments, or
    (experiment, score) pairs), in the order the rule lists them."""
    files = [files] if isinstance(files, str) else list(files)
    if len(files) != len(keys):
        raise InputError(f"{len(files)} {name} inputs for {len(keys)} entries: the rule's inputs do not match "
                         "its parameters; re-run snakemake")
    return dict(zip(keys, files))


def score_of(score: dict, x, meta: dict, input: dict):
    """(the score object of a spec on the subset x with metadata ``meta``, its data model);
    ``input`` holds the files the kind declared (:meth:`ScoreModel.inputs`)."""
    model = for_meta(meta)
    return build_score(score, x, model, dict(input)), model


def provenance(score: dict | list[dict]) -> dict:
    """The ``provenance`` of a score spec (or the first of shard metadata) and its one line,
    ``model``, for a table's metadata; empty for kinds whose config says it all."""
    found = (score[0] if isinstance(score, list) else score).get("provenance")
    return {"provenance": found, "model": found["id"]} if found else {}
