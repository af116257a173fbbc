# Memorisation against training time and dataset size (memorisation.enabled): a chain of
# training jobs, one per weight snapshot (each continues the previous one, so a longer
# training re-uses every snapshot it has), one measurement job per snapshot, a gather per
# experiment and one per group of n.
localrules:
    memorisation_figure,


rule train_snapshot:
    input:
        unpack(snapshot_train_inputs),
    output:
        snapshot=paths.WEIGHT_SNAPSHOT,
    params:
        exp="{exp}",
        arch="{score}",
        model=network_params,
        train=snapshot_train_params,
        step=step_param,
        seed=config["seed"],
        state=snapshot_state,
        device=config["device"],
    log:
        log_path("train_step{step}", per_score=True),
    benchmark:
        bench_path("train_step{step}", per_score=True)
    wildcard_constraints:
        score=TRAINABLE,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule memorisation_snapshot:
    input:
        unpack(memorisation_snapshot_inputs),
    output:
        measure=paths.MEMORISATION_SNAPSHOT,
    params:
        exp="{exp}",
        score=score_param,
        memorisation=memorisation_measure_params,
        block=experiment("block"),
        seed=config["seed"],
        step=step_param,
    log:
        log_path("memorisation_step{step}", per_score=True),
    benchmark:
        bench_path("memorisation_step{step}", per_score=True)
    wildcard_constraints:
        score=TRAINABLE,
    resources:
        mem_mb=4000,
        runtime=minutes(30),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule memorisation:
    input:
        unpack(memorisation_inputs),
    output:
        curve=paths.MEMORISATION,
        loss=paths.DENOISING_LOSS,
    params:
        exp="{exp}",
        score="{score}",
        memorisation=memorisation_gather_params,
        steps=memorisation_steps_param,
        seed=config["seed"],
        device=config["device"],
    log:
        log_path("memorisation", per_score=True),
    benchmark:
        bench_path("memorisation", per_score=True)
    wildcard_constraints:
        score=TRAINABLE,
    resources:
        mem_mb=2000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule memorisation_figure:
    input:
        unpack(memorisation_figure_inputs),
    output:
        figure=report(
            paths.FIG_MEMORISATION,
            caption="../report/memorisation.rst",
            category="{exp}",
            subcategory="memorisation",
        ),
    params:
        exp="{exp}",
    log:
        log_path("memorisation_figure"),
    benchmark:
        bench_path("memorisation_figure")
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule memorisation_group:
    input:
        unpack(memorisation_group_inputs),
    output:
        table=paths.GROUP_MEMORISATION,
        fraction=report(
            paths.FIG_GROUP_MEMORISED,
            caption="../report/group_memorised_fraction.rst",
            category="{group}",
            subcategory="memorisation",
        ),
        tau=report(
            paths.FIG_GROUP_TAU,
            caption="../report/group_tau.rst",
            category="{group}",
            subcategory="memorisation",
        ),
        nearest=report(
            paths.FIG_GROUP_NEAREST,
            caption="../report/group_nearest.rst",
            category="{group}",
            subcategory="memorisation",
        ),
        collapse=report(
            paths.FIG_GROUP_COLLAPSE_ENTROPY,
            caption="../report/group_collapse_entropy.rst",
            category="{group}",
            subcategory="memorisation",
        ),
    params:
        group="{group}",
        members=memorisation_members_param,
    log:
        f"{paths.LOGS}/groups/{{group}}/memorisation.log",
    benchmark:
        f"{paths.BENCHMARKS}/groups/{{group}}/memorisation.tsv"
    resources:
        mem_mb=2000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
