"""The workflow's stages: one function per Snakemake rule, wiring only, in one module per
rule file (``workflow/rules/{name}.smk`` -> ``stages/{name}.py``).

Each stage takes ``input`` and ``output`` mappings (rule name -> path, or a list of
paths) and its rule's ``params`` as keyword arguments; it reads its declared inputs,
calls one function of the module that owns the concept, and writes its outputs
atomically with metadata (:mod:`diffusion_regimes.io`). No stage computes a statistic.
A score model reaches a job as one parameter, ``score``: its spec from the registry
(:mod:`diffusion_regimes.scoremodels`).
"""

from .analysis import entropy, entropy_shard, summary, symmetry, table1, theory
from .data import spectrum, subset
from .memorisation import memorisation, memorisation_figure, memorisation_group, memorisation_snapshot, train_snapshot
from .models import classifier, train
from .report import figures, group_figures, group_speciation, landing, samples, symmetry_figure
from .sampling import cloning, cloning_shard, collapse, collapse_shard, sanity, uturn

__all__ = ["classifier", "cloning", "cloning_shard", "collapse", "collapse_shard", "entropy", "entropy_shard",
           "figures", "group_figures", "group_speciation", "landing", "memorisation", "memorisation_figure",
           "memorisation_group",
           "memorisation_snapshot", "samples", "sanity", "spectrum", "subset", "summary", "symmetry", "symmetry_figure",
           "table1", "theory", "train", "train_snapshot", "uturn"]
