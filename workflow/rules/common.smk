# Helpers of the rules: paths, per-rule params and inputs. No logic beyond wiring.
from diffusion_regimes import paths
from diffusion_regimes.config import ANALYTIC_SOURCES, MEMORISING_SCORES, NETWORK_SCORES, needs_classifier
from diffusion_regimes.sampling import Sampler

EXPERIMENTS = config["experiments"]
# software of every rule for --software-deployment-method conda (the package itself
# is found in src/ by the stage wrapper)
CONDA_ENV = "../envs/runtime.yaml"


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    group="|".join(sorted({c["group"] for c in EXPERIMENTS.values() if c["group"]})) or "no-group",
    score="exact|empirical|unet",
    shard=r"\d+",


def minutes(base):
    """Runtime resource (minutes) that grows with the attempt, so a job retried after a
    scheduler's time limit asks for more time (and training resumes from its state)."""
    return lambda wildcards, attempt: base * attempt


def exp_cfg(wildcards):
    return EXPERIMENTS[wildcards.exp]


def log_path(stage, per_score=False):
    return f"{paths.LOGS}/{{exp}}/" + ("{score}/" if per_score else "") + f"{stage}.log"


def bench_path(stage, per_score=False):
    return f"{paths.BENCHMARKS}/{{exp}}/" + ("{score}/" if per_score else "") + f"{stage}.tsv"


def is_image(exp):
    return EXPERIMENTS[exp]["dataset"]["source"] not in ANALYTIC_SOURCES


# ---- params: every hyperparameter reaches a rule through params
def dataset_params(wildcards):
    return exp_cfg(wildcards)["dataset"]


def model_params(wildcards):
    return exp_cfg(wildcards)["model"]


def train_params(wildcards):
    return exp_cfg(wildcards)["train"]


def classifier_params(wildcards):
    """Training settings of the classifier (its accuracy threshold is a cloning param)."""
    return {k: v for k, v in exp_cfg(wildcards)["classifier"].items() if k != "min_accuracy"}


def min_accuracy_param(wildcards):
    """Accuracy threshold of the classifier, for the cloning jobs that use one."""
    cfg = exp_cfg(wildcards)
    return cfg["classifier"]["min_accuracy"] if needs_classifier(cfg) else None


# A sampling stage runs as shards (its sampling keys) and a gather (n_bootstrap only), so
# that a change of n_bootstrap re-runs the gather without re-sampling.
def cloning_params(wildcards):
    return {k: v for k, v in exp_cfg(wildcards)["cloning"].items() if k != "n_bootstrap"}


def cloning_gather_params(wildcards):
    return {"n_bootstrap": exp_cfg(wildcards)["cloning"]["n_bootstrap"]}


def collapse_params(wildcards):
    return {k: v for k, v in exp_cfg(wildcards)["collapse"].items() if k != "n_bootstrap"}


def collapse_gather_params(wildcards):
    return {"n_bootstrap": exp_cfg(wildcards)["collapse"]["n_bootstrap"]}


def shard_param(wildcards):
    return int(wildcards.shard)


def shard_files(template, stage):
    """Input function: the shard files of ``stage`` (its ``shards`` from the config)."""
    def files(wildcards):
        n = exp_cfg(wildcards)[stage]["shards"]
        return [template.format(shard=i, **dict(wildcards.items())) for i in range(n)]
    return files


def sampler_params(wildcards):
    """The sampler of this score model (network_sampler for networks), relevant keys only."""
    key = "network_sampler" if wildcards.score in NETWORK_SCORES else "sampler"
    return Sampler.relevant_config(exp_cfg(wildcards)[key])


def block_param(wildcards):
    return exp_cfg(wildcards)["block"]


def score_block_param(wildcards):
    """Block size of the empirical score, for the jobs whose score model is empirical."""
    return exp_cfg(wildcards)["block"] if wildcards.score == "empirical" else None


def symmetry_params(wildcards):
    return exp_cfg(wildcards)["symmetry"]


def analytic_sampler_params(wildcards):
    return Sampler.relevant_config(exp_cfg(wildcards)["sampler"])


def group_members_param(wildcards):
    return groups()[wildcards.group]


def group_inputs(wildcards):
    files = []
    for exp, scores in groups()[wildcards.group].items():
        files += [paths.DATA.format(exp=exp), paths.SPECTRUM.format(exp=exp), paths.THEORY.format(exp=exp),
                  paths.ENTROPY.format(exp=exp), paths.CLONING.format(exp=exp, score=scores[0])]
    return files


def entropy_params(wildcards):
    return exp_cfg(wildcards)["entropy"]


def spectrum_params(wildcards):
    return exp_cfg(wildcards)["spectrum"]


def theory_params(wildcards):
    return exp_cfg(wildcards)["theory"]


def device_param(wildcards):
    """Where networks run (config device): training, the classifier, and cloning with a
    network score or a classifier labeller; None for jobs that run no network."""
    score = getattr(wildcards, "score", None)
    if score is None or score in NETWORK_SCORES or needs_classifier(exp_cfg(wildcards)):
        return config["device"]
    return None


def network_device_param(wildcards):
    """Where a network score runs (collapse uses no classifier)."""
    return config["device"] if wildcards.score in NETWORK_SCORES else None


def train_state(wildcards):
    return paths.TRAIN_STATE.format(exp=wildcards.exp, score=wildcards.score)


# ---- inputs
def sampling_inputs(wildcards, with_classifier=True):
    inputs = {"data": paths.DATA.format(exp=wildcards.exp),
              "spectrum": paths.SPECTRUM.format(exp=wildcards.exp)}
    if wildcards.score in NETWORK_SCORES:
        inputs["model"] = paths.MODEL.format(exp=wildcards.exp, score=wildcards.score)
    if with_classifier and needs_classifier(exp_cfg(wildcards)):
        inputs["classifier"] = paths.CLASSIFIER.format(exp=wildcards.exp)
    return inputs


def collapse_inputs(wildcards):
    return sampling_inputs(wildcards, with_classifier=False)


def memorising(exp):
    return [s for s in EXPERIMENTS[exp]["scores"] if s in MEMORISING_SCORES]


def experiment_tables(exp):
    scores = EXPERIMENTS[exp]["scores"]
    tables = [paths.SPECTRUM.format(exp=exp), paths.ENTROPY.format(exp=exp),
              paths.THEORY.format(exp=exp)]
    tables += [paths.CLONING.format(exp=exp, score=s) for s in scores]
    tables += [paths.COLLAPSE_TIMES.format(exp=exp, score=s) for s in memorising(exp)]
    tables += [paths.PHI_C.format(exp=exp, score=s) for s in memorising(exp)]
    return tables


def summary_inputs(wildcards):
    return [t for exp in EXPERIMENTS for t in experiment_tables(exp)]


def figure_inputs(wildcards):
    return experiment_tables(wildcards.exp)


def samples_inputs(wildcards):
    return [paths.DATA.format(exp=wildcards.exp)] + [
        paths.SNAPSHOTS.format(exp=wildcards.exp, score=s) for s in EXPERIMENTS[wildcards.exp]["scores"]]


def experiments_param(wildcards):
    return {exp: list(cfg["scores"]) for exp, cfg in EXPERIMENTS.items()}


def scores_param(wildcards):
    return list(EXPERIMENTS[wildcards.exp]["scores"])


def symmetry_enabled(exp):
    return EXPERIMENTS[exp]["symmetry"]["enabled"]


def groups():
    """Group name -> {member experiment: its score models}, for experiments with a group."""
    out = {}
    for exp, cfg in EXPERIMENTS.items():
        if cfg["group"]:
            out.setdefault(cfg["group"], {})[exp] = list(cfg["scores"])
    return out


def all_outputs():
    outs = [paths.SUMMARY, paths.TABLE1, paths.TABLE1_MD]
    for exp in EXPERIMENTS:
        outs += [paths.FIG_PHI.format(exp=exp), paths.FIG_COLLAPSE.format(exp=exp)]
        if is_image(exp):
            outs.append(paths.FIG_SAMPLES.format(exp=exp))
        if symmetry_enabled(exp):
            outs.append(paths.FIG_SYMMETRY.format(exp=exp))
    for group in groups():
        outs += [paths.FIG_GROUP_SPECIATION.format(group=group), paths.FIG_GROUP_COLLAPSE.format(group=group)]
    return outs
