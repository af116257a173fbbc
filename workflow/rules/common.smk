# Helpers of the rules: paths, per-rule params and inputs. No logic beyond wiring; plain
# parameter look-ups use Snakemake's lookup(). Nothing here imports torch: the DAG is
# evaluated once per job on a cluster.
from diffusion_regimes import paths
from diffusion_regimes.config import (
    GRID_KEYS,
    is_image,
    memorisation_steps,
    needs_classifier,
    needs_t_S,
    result_keys,
)
from diffusion_regimes.scoremodels import name_pattern, sampler_settings, score_kind, score_spec, trainable_kinds

EXPERIMENTS = config["experiments"]
# software of every rule for --software-deployment-method conda (the package itself
# is found in src/ by the stage wrapper)
CONDA_ENV = "../envs/runtime.yaml"


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    group="|".join(sorted({c["group"] for c in EXPERIMENTS.values() if c["group"]})) or "no-group",
    score=name_pattern(),
    shard=r"\d+",
    step=r"\d+",


def minutes(base):
    """Runtime resource (minutes) that grows with the attempt, so a job retried after a
    scheduler's time limit asks for more time (and training resumes from its state)."""
    return lambda wildcards, attempt: base * attempt


def experiment(block):
    """Look-up of an experiment's config block (a function of the job's wildcards)."""
    return lookup(dpath=f"experiments/{{exp}}/{block}", within=config)


def log_path(stage, per_score=False):
    return f"{paths.LOGS}/{{exp}}/" + ("{score}/" if per_score else "") + f"{stage}.log"


def bench_path(stage, per_score=False):
    return f"{paths.BENCHMARKS}/{{exp}}/" + ("{score}/" if per_score else "") + f"{stage}.tsv"


def exp_cfg(wildcards):
    return EXPERIMENTS[wildcards.exp]


#: the score models the workflow trains (the train and snapshot rules' wildcard)
TRAINABLE = "|".join(trainable_kinds())


# ---- params that are not a plain look-up
def score_param(wildcards):
    """The score model of the job as plain values (the registry's spec: kind, settings,
    sampler, device): the one parameter of every job that samples it."""
    return score_spec(exp_cfg(wildcards), wildcards.score, config["device"])


def network_params(wildcards):
    """The config block of the network being trained (its score model's settings)."""
    return score_kind(wildcards.score).settings(exp_cfg(wildcards))


def train_params(wildcards):
    """The train block without its run options (they cannot change the result, so they
    reach the job from the config and a change of them re-runs nothing)."""
    return result_keys("train", exp_cfg(wildcards)["train"])


def classifier_params(wildcards):
    """Training settings of the classifier (its accuracy threshold is a cloning param)."""
    return {k: v for k, v in exp_cfg(wildcards)["classifier"].items() if k != "min_accuracy"}


def require_t_S_param(wildcards):
    """Whether the spectrum stage must refuse Lambda <= 1 (the experiment uses t_S units)."""
    return needs_t_S(exp_cfg(wildcards))


def min_accuracy_param(wildcards):
    """Accuracy threshold of the classifier, for the cloning jobs that use one."""
    cfg = exp_cfg(wildcards)
    return cfg["classifier"]["min_accuracy"] if needs_classifier(cfg) else None


# A sampling stage runs as shards (its sampling keys) and a gather (n_bootstrap only), so
# that a change of n_bootstrap re-runs the gather without re-sampling.
def sampling_params(stage):
    def params(wildcards):
        return {k: v for k, v in exp_cfg(wildcards)[stage].items() if k != "n_bootstrap"}
    return params


def bootstrap_params(stage):
    def params(wildcards):
        return {"n_bootstrap": exp_cfg(wildcards)[stage]["n_bootstrap"]}
    return params


def shard_files(template, stage):
    """Input function: the shard files of ``stage`` (its ``shards`` from the config)."""
    def files(wildcards):
        n = exp_cfg(wildcards)[stage]["shards"]
        return [template.format(shard=i, **dict(wildcards.items())) for i in range(n)]
    return files


def shard_param(wildcards):
    return int(wildcards.shard)


def labeller_device_param(wildcards):
    """Where the classifier labelling a job's samples runs (None without one)."""
    return config["device"] if needs_classifier(exp_cfg(wildcards)) else None


def symmetry_sampler_param(wildcards):
    """The sampler of the symmetry stage (the exact score's: the analytic sampler block)."""
    return sampler_settings(exp_cfg(wildcards)["sampler"])


def train_state(wildcards):
    return paths.TRAIN_STATE.format(exp=wildcards.exp, score=wildcards.score)


def scores_param(wildcards):
    return list(EXPERIMENTS[wildcards.exp]["scores"])


def experiments_param(wildcards):
    return {exp: list(cfg["scores"]) for exp, cfg in EXPERIMENTS.items()}


def group_members_param(wildcards):
    return groups()[wildcards.group]


# ---- inputs
def sampling_inputs(wildcards, with_classifier=True, checked=True):
    """Data, spectrum, the files the score model reads (its registry entry says which), the
    classifier where classes come from one, and for a network its sanity check (so that a
    model that does not denoise the data stops before any measurement)."""
    kind = score_kind(wildcards.score)
    inputs = {"data": paths.DATA.format(exp=wildcards.exp),
              "spectrum": paths.SPECTRUM.format(exp=wildcards.exp),
              **kind.inputs(wildcards.exp, exp_cfg(wildcards))}
    if with_classifier and needs_classifier(exp_cfg(wildcards)):
        inputs["classifier"] = paths.CLASSIFIER.format(exp=wildcards.exp)
    if checked and kind.network and exp_cfg(wildcards)["sanity"]["enabled"]:
        inputs["sanity"] = paths.SANITY.format(exp=wildcards.exp, score=wildcards.score)
    return inputs


def sanity_inputs(wildcards):
    return {**sampling_inputs(wildcards, with_classifier=False, checked=False),
            "reference": paths.REFERENCE.format(exp=wildcards.exp)}


def uturn_inputs(wildcards):
    return {**sampling_inputs(wildcards), "reference": paths.REFERENCE.format(exp=wildcards.exp)}


def collapse_inputs(wildcards):
    return {**sampling_inputs(wildcards, with_classifier=False), "reference": paths.REFERENCE.format(exp=wildcards.exp)}


def uturn_experiments():
    """The experiments with U-turns (uturn.enabled), in config order."""
    return [exp for exp, cfg in EXPERIMENTS.items() if cfg["uturn"]["enabled"]]


def uturn_param(wildcards):
    return uturn_experiments()


def experiment_tables(exp):
    """The tables of one experiment that the summary and its figures read, by kind (uturn:
    empty unless the experiment has U-turns)."""
    scores = EXPERIMENTS[exp]["scores"]
    uturn = exp in uturn_experiments()
    return {"spectrum": paths.SPECTRUM.format(exp=exp), "entropy": paths.ENTROPY.format(exp=exp),
            "theory": paths.THEORY.format(exp=exp),
            "cloning": [paths.CLONING.format(exp=exp, score=s) for s in scores],
            "collapse": [paths.COLLAPSE_TIMES.format(exp=exp, score=s) for s in scores],
            "phi_c": [paths.PHI_C.format(exp=exp, score=s) for s in scores],
            "uturn": [paths.UTURN.format(exp=exp, score=s) for s in scores] if uturn else []}


def summary_inputs(wildcards):
    """Per experiment, in config order: spectrum, entropy, theory; per (experiment, score):
    cloning and collapse times, and the U-turns of the experiments that have them (the
    summary stage zips them with its experiments and uturn parameters)."""
    tables = [experiment_tables(exp) for exp in EXPERIMENTS]
    return {"spectrum": [t["spectrum"] for t in tables], "entropy": [t["entropy"] for t in tables],
            "theory": [t["theory"] for t in tables], "cloning": [f for t in tables for f in t["cloning"]],
            "collapse": [f for t in tables for f in t["collapse"]], "uturn": [f for t in tables for f in t["uturn"]]}


def figure_inputs(wildcards):
    return experiment_tables(wildcards.exp)


def samples_inputs(wildcards):
    return {"data": paths.DATA.format(exp=wildcards.exp),
            "snapshots": [paths.SNAPSHOTS.format(exp=wildcards.exp, score=s)
                          for s in EXPERIMENTS[wildcards.exp]["scores"]]}


def group_inputs(wildcards):
    """Per member of the group, in order: data, spectrum, theory, entropy, and the cloning
    table of its first score model."""
    members = groups()[wildcards.group]
    return {"data": [paths.DATA.format(exp=e) for e in members],
            "spectrum": [paths.SPECTRUM.format(exp=e) for e in members],
            "theory": [paths.THEORY.format(exp=e) for e in members],
            "entropy": [paths.ENTROPY.format(exp=e) for e in members],
            "cloning": [paths.CLONING.format(exp=e, score=s[0]) for e, s in members.items()]}


def dimension_groups():
    """The groups whose members differ in their dimension d (a grid over d)."""
    return [g for g, members in groups().items()
            if len({EXPERIMENTS[e]["dataset"].get("d") for e in members} - {None}) > 1]


def group_speciation_inputs(wildcards):
    """Per member of the group, in order: data, spectrum, theory, the cloning table of its
    first score model, and that model's U-turns when the group measures them."""
    members = groups()[wildcards.group]
    out = {k: v for k, v in group_inputs(wildcards).items() if k != "entropy"}
    if all(EXPERIMENTS[e]["uturn"]["enabled"] for e in members):
        out["uturn"] = [paths.UTURN.format(exp=e, score=s[0]) for e, s in members.items()]
    return out


# ---- memorisation study (memorisation.enabled): snapshots, their measurements, gathers
def memorisation_experiments():
    """The experiments with a memorisation study, in config order."""
    return [exp for exp, cfg in EXPERIMENTS.items() if cfg["memorisation"]["enabled"]]


def memorisation_groups():
    """Groups whose members all have a memorisation study (a grid over n): name -> members."""
    return {g: list(m) for g, m in groups().items() if all(EXPERIMENTS[e]["memorisation"]["enabled"] for e in m)}


def snapshot_paths(template, exp):
    cfg = EXPERIMENTS[exp]
    score = cfg["memorisation"]["score"]
    return [template.format(exp=exp, score=score, step=s) for s in memorisation_steps(cfg)]


def is_snapshot_of(wildcards):
    """Whether the network (exp, score) is the one a memorisation study trains in snapshots."""
    mem = exp_cfg(wildcards)["memorisation"]
    return mem["enabled"] and mem["score"] == wildcards.score


def _training_data(exp):
    """What training reads: the data, and the spectrum for ordering only (ancient: never a
    reason to re-run; data without a speciation regime stop before any network is trained)."""
    return {"data": paths.DATA.format(exp=exp), "spectrum": ancient(paths.SPECTRUM.format(exp=exp))}


def train_inputs(wildcards):
    """Data (and the spectrum, for ordering only); the network of a memorisation study is
    its last snapshot's, trained once."""
    inputs = _training_data(wildcards.exp)
    if is_snapshot_of(wildcards):
        inputs["snapshot"] = snapshot_paths(paths.WEIGHT_SNAPSHOT, wildcards.exp)[-1]
    return inputs


def snapshot_train_inputs(wildcards):
    """Data, spectrum (ordering only) and the previous snapshot this one continues."""
    steps = memorisation_steps(exp_cfg(wildcards))
    step = int(wildcards.step)
    if step not in steps:
        raise ValueError(f"step {step} is not a snapshot step of {wildcards.exp}: {steps}")
    inputs = _training_data(wildcards.exp)
    i = steps.index(step)
    if i:
        inputs["previous"] = paths.WEIGHT_SNAPSHOT.format(exp=wildcards.exp, score=wildcards.score, step=steps[i - 1])
    return inputs


def snapshot_train_params(wildcards):
    """The train block without its run options and without steps (a longer run re-uses the
    snapshots of a shorter one)."""
    return {k: v for k, v in train_params(wildcards).items() if k != "steps"}


def snapshot_state(wildcards):
    return paths.SNAPSHOT_STATE.format(exp=wildcards.exp, score=wildcards.score, step=wildcards.step)


def step_param(wildcards):
    return int(wildcards.step)


def memorisation_measure_params(wildcards):
    """The memorisation keys a snapshot's measurement uses (not the gather's)."""
    gather = ("enabled", "threshold", "n_bootstrap", "per_decade", "first_step")
    return {k: v for k, v in exp_cfg(wildcards)["memorisation"].items() if k not in gather}


def memorisation_gather_params(wildcards):
    mem = exp_cfg(wildcards)["memorisation"]
    return {k: mem[k] for k in ("threshold", "n_bootstrap", "quality_blocks")}


def feature_classifier(exp):
    """The classifier whose features the quality distance of an image experiment uses: one
    for a whole memorisation group (that of its member with the most images), so that the
    quality, and tau_gen, compare across n."""
    cfg = EXPERIMENTS[exp]
    members = memorisation_groups().get(cfg["group"], [exp])
    largest = max(members, key=lambda e: EXPERIMENTS[e]["dataset"].get("per_class") or float("inf"))
    return paths.CLASSIFIER.format(exp=largest)


def memorisation_snapshot_inputs(wildcards):
    """Data, reference and the snapshot, as the network (``model``) of the score model."""
    inputs = {"data": paths.DATA.format(exp=wildcards.exp), "reference": paths.REFERENCE.format(exp=wildcards.exp),
              "model": paths.WEIGHT_SNAPSHOT.format(**dict(wildcards.items()))}
    if is_image(exp_cfg(wildcards)):
        inputs["classifier"] = feature_classifier(wildcards.exp)
    return inputs


def memorisation_inputs(wildcards):
    inputs = {"snapshots": snapshot_paths(paths.MEMORISATION_SNAPSHOT, wildcards.exp),
              "data": paths.DATA.format(exp=wildcards.exp), "reference": paths.REFERENCE.format(exp=wildcards.exp)}
    if is_image(exp_cfg(wildcards)):
        inputs["classifier"] = feature_classifier(wildcards.exp)
    return inputs


def memorisation_steps_param(wildcards):
    return memorisation_steps(exp_cfg(wildcards))


def memorisation_curve(exp, template=paths.MEMORISATION):
    return template.format(exp=exp, score=EXPERIMENTS[exp]["memorisation"]["score"])


def memorisation_group_inputs(wildcards):
    """Per member of the group, in order: its curves, entropy, theory, last snapshot's
    measurement and data."""
    members = memorisation_groups()[wildcards.group]
    return {"curve": [memorisation_curve(e) for e in members],
            "entropy": [paths.ENTROPY.format(exp=e) for e in members],
            "theory": [paths.THEORY.format(exp=e) for e in members],
            "last": [snapshot_paths(paths.MEMORISATION_SNAPSHOT, e)[-1] for e in members],
            "data": [paths.DATA.format(exp=e) for e in members]}


def memorisation_members_param(wildcards):
    return memorisation_groups()[wildcards.group]


def memorisation_figure_inputs(wildcards):
    return {"curve": memorisation_curve(wildcards.exp), "loss": memorisation_curve(wildcards.exp, paths.DENOISING_LOSS)}


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
    outs = [paths.SUMMARY, paths.TABLE1, paths.TABLE1_MD, paths.REPORT_LANDING]
    for exp, cfg in EXPERIMENTS.items():
        outs += [paths.FIG_PHI.format(exp=exp), paths.FIG_COLLAPSE.format(exp=exp)]
        if is_image(cfg):
            outs.append(paths.FIG_SAMPLES.format(exp=exp))
        if symmetry_enabled(exp):
            outs.append(paths.FIG_SYMMETRY.format(exp=exp))
    for group in groups():
        outs += [paths.FIG_GROUP_SPECIATION.format(group=group), paths.FIG_GROUP_COLLAPSE.format(group=group)]
    for group in dimension_groups():
        outs += [paths.GROUP_SPECIATION.format(group=group), paths.FIG_GROUP_T_S.format(group=group)]
    outs += [paths.FIG_MEMORISATION.format(exp=exp) for exp in memorisation_experiments()]
    for group in memorisation_groups():
        outs += [t.format(group=group) for t in (paths.GROUP_MEMORISATION, paths.FIG_GROUP_MEMORISED, paths.FIG_GROUP_TAU,
                                                 paths.FIG_GROUP_NEAREST, paths.FIG_GROUP_COLLAPSE_ENTROPY)]
    return outs
