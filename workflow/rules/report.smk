localrules:
    figures,
    samples,


rule figures:
    input:
        figure_inputs,
    output:
        phi=report(
            paths.FIGURES + "/phi.png",
            caption="../report/phi.rst",
            category="{exp}",
            subcategory="speciation",
        ),
        collapse=report(
            paths.FIGURES + "/collapse.png",
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
    script:
        "../scripts/stage.py"


rule samples:
    input:
        samples_inputs,
    output:
        samples=report(
            paths.FIGURES + "/samples.png",
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
    script:
        "../scripts/stage.py"
