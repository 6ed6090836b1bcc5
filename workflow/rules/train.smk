rule finetune_dense:
    """Fine-tune the pretrained model once per (task, seed) and evaluate it; every method starts from it."""
    output:
        model=directory(f"{RESULTS}/models/{{task}}/dense/seed{{seed}}{{steps}}"),
        summary=f"{RESULTS}/summaries/{{task}}/dense/1/seed{{seed}}{{steps}}.json",
        predictions=f"{RESULTS}/summaries/{{task}}/dense/1/seed{{seed}}{{steps}}.predictions.json",
    params:
        exp=lambda w: job_experiment(w.task, steps=w.steps),
    threads: EXP["threads"]["train"]
    resources:
        mem_mb=6000,
        runtime=120,
        timing=1,
    log:
        f"{RESULTS}/logs/{{task}}/dense/seed{{seed}}{{steps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{task}}/dense/seed{{seed}}{{steps}}.tsv"
    shell:
        "python -m prunebench dense --experiment {params.exp:q} --task {wildcards.task} --seed {wildcards.seed}"
        " --model-dir {output.model} --summary {output.summary} --threads {threads} > {log} 2>&1"
