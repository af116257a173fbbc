# Both take the spectrum as an ordering-only input (ancient: never a reason to re-run), so that
# data without a speciation regime (Lambda <= 1, refused by the spectrum stage) stop before
# any network is trained.
rule train:
    input:
        unpack(train_inputs),
    output:
        model=paths.MODEL,
        log=paths.TRAIN_LOG,
    params:
        exp="{exp}",
        arch="{score}",
        model=network_params,
        train=train_params,
        seed=config["seed"],
        state=train_state,
        device=config["device"],
    log:
        log_path("train", per_score=True),
    benchmark:
        bench_path("train", per_score=True)
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


rule classifier:
    input:
        data=paths.DATA,
        reference=paths.REFERENCE,
        spectrum=ancient(paths.SPECTRUM),
    output:
        classifier=paths.CLASSIFIER,
    params:
        exp="{exp}",
        classifier=classifier_params,
        seed=config["seed"],
        device=config["device"],
    log:
        log_path("classifier"),
    benchmark:
        bench_path("classifier")
    resources:
        mem_mb=2000,
        runtime=minutes(20),
    conda:
        CONDA_ENV
    script:
        "../scripts/stage.py"
