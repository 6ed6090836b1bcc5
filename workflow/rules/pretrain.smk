rule pretrain:
    """The pre-training stage of a row that compresses during pre-training (methods/pretrain_stage.py):
    masked-language-model training of the model with the row's stage method at the budget, on the corpus
    tasks' training texts (prunebench/training/pretrain.py). One job per (row, budget, seed), shared by all tasks."""
    wildcard_constraints:
        method=_alternatives(PRETRAIN_METHODS),
    output:
        directory(f"{RESULTS}/pretrained/{{method}}/{{budget}}/seed{{seed}}"),
    params:
        exp=lambda w: job_pretrain(w.method),
    threads: EXP["threads"]["train"]
    resources:
        mem_mb=6000,
        runtime=120,
        timing=1,
    log:
        f"{RESULTS}/logs/pretrain/{{method}}/{{budget}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{method}}/{{budget}}/seed{{seed}}.tsv"
    shell:
        "python -m prunebench pretrain --experiment {params.exp:q} --method {wildcards.method}"
        " --budget {wildcards.budget} --seed {wildcards.seed} --out-dir {output} --threads {threads} > {log} 2>&1"
