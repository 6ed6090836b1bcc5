def analysis_outputs():
    """Head-ablation analyses of the dense model, one per (task, seed)."""
    return [f"{RESULTS}/analysis/{t}/head_ablation_seed{s}.json" for t in TASKS for s in SEEDS]


rule head_ablation:
    """Metric of the dense model with single heads, all but one head, or a layer's attention disabled."""
    input:
        dense=f"{RESULTS}/models/{{task}}/dense/seed{{seed}}",
    output:
        f"{RESULTS}/analysis/{{task}}/head_ablation_seed{{seed}}.json",
    params:
        exp=lambda w: job_experiment(w.task),
    threads: EXP["threads"]["train"]
    resources:
        mem_mb=4000,
        runtime=120,
        timing=1,
    log:
        f"{RESULTS}/logs/analysis/{{task}}/head_ablation_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/analysis/{{task}}/head_ablation_seed{{seed}}.tsv"
    shell:
        "python -m prunebench.analysis head-ablation --experiment {params.exp:q} --task {wildcards.task}"
        " --dense-dir {input.dense} --out {output} --threads {threads} > {log} 2>&1"
