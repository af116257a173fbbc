localrules:
    figures,
    samples,


rule figures:
    input:
        figure_inputs,
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
        samples_inputs,
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
