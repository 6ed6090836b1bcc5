def ablation_variant(mode):
    """File-name part of a head-ablation mode: '' for mask (the default), '_uniform' for uniform."""
    return "" if mode == "mask" else f"_{mode}"


def analysis_outputs():
    """Head-ablation analyses of the dense model, one per (task, disabling mode), of the first seed's
    dense model (an analysis of one model, not a verdict across seeds; each costs ~150 evaluations)."""
    return [f"{RESULTS}/analysis/{t}/head_ablation{ablation_variant(m)}_seed{SEEDS[0]}.json"
            for t in TASKS for m in EXP["head_ablation_modes"]]


rule head_ablation:
    """Metric of the dense model with single heads, all but one head, or a layer's attention disabled
    (heads masked, Michel et al.; or, variant '_uniform', given uniform attention, Kovaleva et al.)."""
    wildcard_constraints:
        variant="(_uniform)?",
    input:
        dense=lambda w: model_dir(w.task, "dense", "1", w.seed, LONGEST),
    output:
        f"{RESULTS}/analysis/{{task}}/head_ablation{{variant}}_seed{{seed}}.json",
    params:
        exp=lambda w: job_experiment(w.task, steps=LONGEST),
        mode=lambda w: w.variant.lstrip("_") or "mask",
    threads: EXP["threads"]["train"]
    resources:
        mem_mb=4000,
        runtime=120,
        timing=1,
    log:
        f"{RESULTS}/logs/analysis/{{task}}/head_ablation{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/analysis/{{task}}/head_ablation{{variant}}_seed{{seed}}.tsv"
    shell:
        "python -m prunebench head-ablation --experiment {params.exp:q} --task {wildcards.task}"
        " --dense-dir {input.dense} --disable {params.mode} --out {output} --threads {threads} > {log} 2>&1"
