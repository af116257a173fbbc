# Sampling stages: cloning and collapse each run as `shards` jobs (cloning.shards, collapse.shards), every
# shard a contiguous range of blocks of pairs or trajectories with their own generators,
# merged by a gather job into the declared outputs (identical to a single job's).


rule cloning_shard:
    input:
        unpack(sampling_inputs),
    output:
        labels=paths.CLONING_SHARD,
        snapshots=paths.SNAPSHOTS_SHARD,
    params:
        exp="{exp}",
        score=score_param,
        cloning=sampling_params("cloning"),
        min_accuracy=min_accuracy_param,
        seed=config["seed"],
        shard=shard_param,
        device=labeller_device_param,
    log:
        log_path("cloning_{shard}", per_score=True),
    benchmark:
        bench_path("cloning_{shard}", per_score=True)
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule cloning:
    input:
        labels=shard_files(paths.CLONING_SHARD, "cloning"),
        snapshots=shard_files(paths.SNAPSHOTS_SHARD, "cloning"),
        data=paths.DATA,
        spectrum=paths.SPECTRUM,
    output:
        cloning=paths.CLONING,
        snapshots=paths.SNAPSHOTS,
    params:
        exp="{exp}",
        score="{score}",
        cloning=bootstrap_params("cloning"),
        seed=config["seed"],
    log:
        log_path("cloning", per_score=True),
    benchmark:
        bench_path("cloning", per_score=True)
    resources:
        mem_mb=2000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule collapse_shard:
    input:
        unpack(collapse_inputs),
    output:
        times=paths.COLLAPSE_SHARD,
        pairs=paths.COLLAPSE_PAIRS_SHARD,
    params:
        exp="{exp}",
        score=score_param,
        collapse=sampling_params("collapse"),
        block=experiment("block"),
        seed=config["seed"],
        shard=shard_param,
    log:
        log_path("collapse_{shard}", per_score=True),
    benchmark:
        bench_path("collapse_{shard}", per_score=True)
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule collapse:
    input:
        times=shard_files(paths.COLLAPSE_SHARD, "collapse"),
        pairs=shard_files(paths.COLLAPSE_PAIRS_SHARD, "collapse"),
    output:
        times=paths.COLLAPSE_TIMES,
        phi_c=paths.PHI_C,
    params:
        exp="{exp}",
        score="{score}",
        collapse=bootstrap_params("collapse"),
        seed=config["seed"],
    log:
        log_path("collapse", per_score=True),
    benchmark:
        bench_path("collapse", per_score=True)
    resources:
        mem_mb=2000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule sanity:
    input:
        unpack(sanity_inputs),
    output:
        sanity=paths.SANITY,
    params:
        exp="{exp}",
        score=score_param,
        name="{score}",
        sanity=experiment("sanity"),
        seed=config["seed"],
    log:
        log_path("sanity", per_score=True),
    benchmark:
        bench_path("sanity", per_score=True)
    resources:
        mem_mb=2000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule uturn:
    input:
        unpack(uturn_inputs),
    output:
        uturn=paths.UTURN,
    params:
        exp="{exp}",
        score=score_param,
        uturn=experiment("uturn"),
        min_accuracy=min_accuracy_param,
        seed=config["seed"],
        device=labeller_device_param,
    log:
        log_path("uturn", per_score=True),
    benchmark:
        bench_path("uturn", per_score=True)
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
