rule subset:
    output:
        data=paths.DATA,
        reference=paths.REFERENCE,
    params:
        exp="{exp}",
        dataset=experiment("dataset"),
        seed=config["seed"],
    log:
        log_path("subset"),
    benchmark:
        bench_path("subset")
    resources:
        mem_mb=2000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule spectrum:
    input:
        data=paths.DATA,
    output:
        spectrum=paths.SPECTRUM,
    params:
        spectrum=experiment("spectrum"),
        require_t_S=require_t_S_param,
    log:
        log_path("spectrum"),
    benchmark:
        bench_path("spectrum")
    resources:
        mem_mb=4000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
