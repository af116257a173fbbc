# The entropy Monte Carlo runs as `entropy.shards` jobs over its time points, merged by a gather.
rule entropy_shard:
    input:
        data=paths.DATA,
    output:
        entropy=paths.ENTROPY_SHARD,
    params:
        exp="{exp}",
        entropy=experiment("entropy"),
        block=experiment("block"),
        seed=config["seed"],
        shard=shard_param,
    log:
        log_path("entropy_{shard}"),
    benchmark:
        bench_path("entropy_{shard}")
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule entropy:
    input:
        entropy=shard_files(paths.ENTROPY_SHARD, "entropy"),
        data=paths.DATA,
    output:
        entropy=paths.ENTROPY,
    params:
        exp="{exp}",
        entropy=experiment("entropy"),
        seed=config["seed"],
    log:
        log_path("entropy"),
    benchmark:
        bench_path("entropy")
    resources:
        mem_mb=1000,
        runtime=minutes(10),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule theory:
    input:
        data=paths.DATA,
        reference=paths.REFERENCE,
        spectrum=paths.SPECTRUM,
    output:
        theory=paths.THEORY,
    params:
        exp="{exp}",
        theory=experiment("theory"),
        seed=config["seed"],
    log:
        log_path("theory"),
    benchmark:
        bench_path("theory")
    resources:
        mem_mb=2000,
        runtime=minutes(20),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule table1:
    input:
        summary=paths.SUMMARY,
    output:
        table=paths.TABLE1,
        markdown=report(paths.TABLE1_MD, caption="../report/table1.rst", category="Summary"),
    log:
        f"{paths.LOGS}/table1.log",
    benchmark:
        f"{paths.BENCHMARKS}/table1.tsv"
    resources:
        mem_mb=1000,
        runtime=minutes(5),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        summary=paths.SUMMARY,
        table=report(paths.SUMMARY_TSV, caption="../report/summary.rst", category="Summary"),
    params:
        experiments=experiments_param,
        uturn=uturn_param,
    log:
        f"{paths.LOGS}/summary.log",
    benchmark:
        f"{paths.BENCHMARKS}/summary.tsv"
    resources:
        mem_mb=1000,
        runtime=minutes(5),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"


rule symmetry:
    input:
        data=paths.DATA,
        spectrum=paths.SPECTRUM,
    output:
        symmetry=paths.SYMMETRY,
    params:
        exp="{exp}",
        symmetry=experiment("symmetry"),
        sampler=symmetry_sampler_param,
        seed=config["seed"],
    log:
        log_path("symmetry"),
    benchmark:
        bench_path("symmetry")
    resources:
        mem_mb=4000,
        runtime=minutes(60),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
