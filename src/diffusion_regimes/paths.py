"""File layout of the workflow (docs/design.md, section 6), shared by the rules and the
stages that gather files (summary, figures). Paths are relative to the
working directory of the Snakemake run."""

from __future__ import annotations

RESULTS = "results"
DATA = RESULTS + "/{exp}/data.parquet"
#: the null's reference set: fresh population draws (solvable sources) or the held-out split (images)
REFERENCE = RESULTS + "/{exp}/reference.parquet"
SPECTRUM = RESULTS + "/{exp}/spectrum.parquet"
MODEL = RESULTS + "/{exp}/models/{score}.pt"
TRAIN_LOG = RESULTS + "/{exp}/models/{score}_log.parquet"
#: resumable training state: not a declared output, survives a killed job
TRAIN_STATE = RESULTS + "/{exp}/models/.state/{score}.pt"
#: memorisation study (memorisation.enabled): weight snapshots (network + full training state), one
#: measurement per snapshot, the curves of one experiment, and one table per group of n
WEIGHT_SNAPSHOT = RESULTS + "/{exp}/models/{score}_snapshots/step{step}.pt"
SNAPSHOT_STATE = RESULTS + "/{exp}/models/.state/{score}_step{step}.pt"
MEMORISATION_SNAPSHOT = RESULTS + "/{exp}/{score}/memorisation/step{step}.parquet"
MEMORISATION = RESULTS + "/{exp}/{score}/memorisation.parquet"
DENOISING_LOSS = RESULTS + "/{exp}/{score}/denoising_loss.parquet"
GROUP_MEMORISATION = RESULTS + "/groups/{group}/memorisation.parquet"
GROUP_SPECIATION = RESULTS + "/groups/{group}/speciation.parquet"
CLASSIFIER = RESULTS + "/{exp}/classifier.pt"
CLONING = RESULTS + "/{exp}/{score}/cloning.parquet"
# shards of the sampling stages (merged by the gather rules into the files above)
CLONING_SHARD = RESULTS + "/{exp}/{score}/shards/cloning_{shard}.parquet"
SNAPSHOTS_SHARD = RESULTS + "/{exp}/{score}/shards/snapshots_{shard}.parquet"
COLLAPSE_SHARD = RESULTS + "/{exp}/{score}/shards/collapse_{shard}.parquet"
COLLAPSE_PAIRS_SHARD = RESULTS + "/{exp}/{score}/shards/collapse_pairs_{shard}.parquet"
ENTROPY_SHARD = RESULTS + "/{exp}/shards/entropy_{shard}.parquet"
SNAPSHOTS = RESULTS + "/{exp}/{score}/snapshots.parquet"
COLLAPSE_TIMES = RESULTS + "/{exp}/{score}/collapse_times.parquet"
PHI_C = RESULTS + "/{exp}/{score}/phi_c.parquet"
#: U-turns (uturn.enabled): phi_U(t), the probability that a noised-and-denoised data point keeps its class
UTURN = RESULTS + "/{exp}/{score}/uturn.parquet"
SANITY = RESULTS + "/{exp}/{score}/sanity.parquet"
ENTROPY = RESULTS + "/{exp}/entropy.parquet"
THEORY = RESULTS + "/{exp}/theory.parquet"
SYMMETRY = RESULTS + "/{exp}/symmetry.parquet"
SUMMARY = RESULTS + "/summary.parquet"
SUMMARY_TSV = RESULTS + "/summary.tsv"
TABLE1 = RESULTS + "/table1.parquet"
TABLE1_MD = RESULTS + "/table1.md"
#: the report's landing section: the headline numbers and the speciation figures, inline
REPORT_LANDING = RESULTS + "/report_landing.rst"
FIGURES = RESULTS + "/figures/{exp}"
FIG_PHI = FIGURES + "/phi.png"
FIG_COLLAPSE = FIGURES + "/collapse.png"
FIG_SAMPLES = FIGURES + "/samples.png"
FIG_SYMMETRY = FIGURES + "/symmetry.png"
FIG_MEMORISATION = FIGURES + "/memorisation.png"
GROUP_FIGURES = RESULTS + "/figures/groups/{group}"
FIG_GROUP_SPECIATION = GROUP_FIGURES + "/speciation.png"
FIG_GROUP_COLLAPSE = GROUP_FIGURES + "/collapse.png"
FIG_GROUP_T_S = GROUP_FIGURES + "/t_S_against_d.png"
FIG_GROUP_MEMORISED = GROUP_FIGURES + "/memorised_fraction.png"
FIG_GROUP_TAU = GROUP_FIGURES + "/tau.png"
FIG_GROUP_NEAREST = GROUP_FIGURES + "/nearest.png"
FIG_GROUP_COLLAPSE_ENTROPY = GROUP_FIGURES + "/collapse_entropy.png"
LOGS = "logs"
BENCHMARKS = "benchmarks/results"
