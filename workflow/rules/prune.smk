rule prune:
    """One method at one budget and seed: prune during the common fine-tuning budget and evaluate."""
    wildcard_constraints:
        method=_alternatives(METHODS),  # not "dense": finetune_dense makes that one
    input:
        unpack(prune_inputs),
    output:
        model=directory(f"{RESULTS}/models/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}"),
        summary=f"{RESULTS}/summaries/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.json",
        predictions=f"{RESULTS}/summaries/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.predictions.json",
    params:
        exp=lambda w: job_experiment(w.task, w.method, w.steps),
        dense=dense_arg,
        reference=reference_arg,
        pretrained=pretrained_arg,
        start=start_arg,
    threads: EXP["threads"]["train"]
    resources:
        mem_mb=6000,
        runtime=120,
        timing=1,
    log:
        f"{RESULTS}/logs/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.tsv"
    shell:
        "python -m prunebench prune --experiment {params.exp:q} --task {wildcards.task} --method {wildcards.method}"
        " --budget {wildcards.budget} --seed {wildcards.seed} {params.dense} {params.reference} {params.pretrained}"
        " {params.start}"
        " --model-dir {output.model} --summary {output.summary} --threads {threads} > {log} 2>&1"
