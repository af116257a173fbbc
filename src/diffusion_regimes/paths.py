"""File layout of the workflow (DESIGN.md section 4), shared by the rules and the
stages that gather files (summary, figures). Paths are relative to the
working directory of the Snakemake run."""

from __future__ import annotations

RESULTS = "results"
DATA = RESULTS + "/{exp}/data.parquet"
SPECTRUM = RESULTS + "/{exp}/spectrum.parquet"
MODEL = RESULTS + "/{exp}/models/{score}.pt"
TRAIN_LOG = RESULTS + "/{exp}/models/{score}_log.parquet"
#: resumable training state: not a declared output, survives a killed job
TRAIN_STATE = RESULTS + "/{exp}/models/.state/{score}.pt"
CLASSIFIER = RESULTS + "/{exp}/classifier.pt"
CLONING = RESULTS + "/{exp}/{score}/cloning.parquet"
SNAPSHOTS = RESULTS + "/{exp}/{score}/snapshots.parquet"
COLLAPSE_TIMES = RESULTS + "/{exp}/{score}/collapse_times.parquet"
PHI_C = RESULTS + "/{exp}/{score}/phi_c.parquet"
ENTROPY = RESULTS + "/{exp}/entropy.parquet"
THEORY = RESULTS + "/{exp}/theory.parquet"
SYMMETRY = RESULTS + "/{exp}/symmetry.parquet"
SUMMARY = RESULTS + "/summary.parquet"
TABLE1 = RESULTS + "/table1.parquet"
TABLE1_MD = RESULTS + "/table1.md"
FIGURES = RESULTS + "/figures/{exp}"
FIG_PHI = FIGURES + "/phi.png"
FIG_COLLAPSE = FIGURES + "/collapse.png"
FIG_SAMPLES = FIGURES + "/samples.png"
FIG_SYMMETRY = FIGURES + "/symmetry.png"
GROUP_FIGURES = RESULTS + "/figures/{group}"
FIG_GROUP_SPECIATION = GROUP_FIGURES + "/speciation.png"
FIG_GROUP_COLLAPSE = GROUP_FIGURES + "/collapse.png"
LOGS = "logs"
BENCHMARKS = "benchmarks/results"
