localrules:
    figures,
    landing,
    samples,
    symmetry_figure,
    group_figures,
    group_speciation,


rule figures:
    input:
        unpack(figure_inputs),
    output:
        phi=report(
            paths.FIG_PHI,
            caption="../report/phi.rst",
            category="{exp}",
            subcategory="speciation",
        ),
        collapse=report(
            paths.FIG_COLLAPSE,
            caption="../report/collapse.rst",
            category="{exp}",
            subcategory="collapse",
        ),
    params:
        exp="{exp}",
        scores=scores_param,
    log:
        log_path("figures"),
    benchmark:
        bench_path("figures")
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule samples:
    input:
        unpack(samples_inputs),
    output:
        samples=report(
            paths.FIG_SAMPLES,
            caption="../report/samples.rst",
            category="{exp}",
            subcategory="samples",
        ),
    params:
        exp="{exp}",
        scores=scores_param,
    log:
        log_path("samples"),
    benchmark:
        bench_path("samples")
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule symmetry_figure:
    input:
        symmetry=paths.SYMMETRY,
    output:
        figure=report(
            paths.FIG_SYMMETRY,
            caption="../report/symmetry.rst",
            category="{exp}",
            subcategory="symmetry breaking",
        ),
    params:
        exp="{exp}",
    log:
        log_path("symmetry_figure"),
    benchmark:
        bench_path("symmetry_figure")
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule group_figures:
    input:
        unpack(group_inputs),
    output:
        speciation=report(
            paths.FIG_GROUP_SPECIATION,
            caption="../report/group_speciation.rst",
            category="{group}",
            subcategory="speciation",
        ),
        collapse=report(
            paths.FIG_GROUP_COLLAPSE,
            caption="../report/group_collapse.rst",
            category="{group}",
            subcategory="collapse",
        ),
    params:
        group="{group}",
        members=group_members_param,
        grid_keys=list(GRID_KEYS),
    log:
        f"{paths.LOGS}/groups/{{group}}/figures.log",
    benchmark:
        f"{paths.BENCHMARKS}/groups/{{group}}/figures.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule group_speciation:
    input:
        unpack(group_speciation_inputs),
    output:
        table=paths.GROUP_SPECIATION,
        figure=report(
            paths.FIG_GROUP_T_S,
            caption="../report/group_t_S.rst",
            category="{group}",
            subcategory="speciation",
        ),
    params:
        group="{group}",
        members=group_members_param,
    log:
        f"{paths.LOGS}/groups/{{group}}/speciation.log",
    benchmark:
        f"{paths.BENCHMARKS}/groups/{{group}}/speciation.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule landing:
    input:
        summary=paths.SUMMARY,
        phi=expand(paths.FIG_PHI, exp=list(EXPERIMENTS)),
        collapse=expand(paths.FIG_COLLAPSE, exp=list(EXPERIMENTS)),
    output:
        landing=report(paths.REPORT_LANDING, caption="../report/landing.rst", category="Summary"),
    params:
        experiments=list(EXPERIMENTS),
    log:
        f"{paths.LOGS}/landing.log",
    benchmark:
        f"{paths.BENCHMARKS}/landing.tsv"
    resources:
        mem_mb=1000,
        runtime=minutes(5),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
