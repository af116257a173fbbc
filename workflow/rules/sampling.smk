rule cloning:
    input:
        unpack(sampling_inputs),
    output:
        cloning=paths.CLONING,
        snapshots=paths.SNAPSHOTS,
    params:
        exp="{exp}",
        score="{score}",
        cloning=cloning_params,
        sampler=sampler_params,
        block=score_block_param,
        min_accuracy=min_accuracy_param,
        seed=config["seed"],
        device=device_param,
    log:
        log_path("cloning", per_score=True),
    benchmark:
        bench_path("cloning", per_score=True)
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule collapse:
    input:
        unpack(collapse_inputs),
    output:
        times=paths.COLLAPSE_TIMES,
        phi_c=paths.PHI_C,
    params:
        exp="{exp}",
        score="{score}",
        collapse=collapse_params,
        sampler=sampler_params,
        block=block_param,
        seed=config["seed"],
        device=network_device_param,
    log:
        log_path("collapse", per_score=True),
    benchmark:
        bench_path("collapse", per_score=True)
    wildcard_constraints:
        score="|".join(MEMORISING_SCORES),
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
