rule measure:
    """Measure a trained model (peak memory, remaining weights, FLOPs, bytes on disk, latency and
    speed-up over dense timed in this one job) and write its result record."""
    input:
        unpack(measure_inputs),
    output:
        record=f"{RESULTS}/records/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.json",
        predictions=f"{RESULTS}/records/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.predictions.json",
    params:
        measure=lambda w: job_measurement(w.task),
    threads: EXP["threads"]["measure"]
    resources:
        mem_mb=4000,
        runtime=30,
        timing=TIMING_UNITS,
    log:
        f"{RESULTS}/logs/measure/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/measure/{{task}}/{{method}}/{{budget}}/seed{{seed}}{{steps}}.tsv"
    shell:
        "python -m prunebench measure --summary {input.summary} --model-dir {input.model} --dense-dir {input.dense}"
        " --measure {params.measure:q} --record {output.record} --threads {threads} > {log} 2>&1"
