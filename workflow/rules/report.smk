import os


def analysis_inputs(wildcards):
    """The redundancy analyses the report shows (defined in analysis.smk, included later)."""
    return analysis_outputs() if "analysis_outputs" in globals() else []


def published_leaderboard():
    """The real run's leaderboard, copied next to the code (reports/leaderboard.*): only when
    results_dir is 'results' (the default profile), never for smoke or test runs."""
    if os.path.normpath(RESULTS) != "results":
        return []
    return ["reports/leaderboard.md", "reports/leaderboard.csv", "reports/leaderboard.json"]


rule leaderboard:
    """Rank the methods per budget (Markdown, CSV and JSON), at the longest fine-tuning length."""
    input:
        all_records([LONGEST]),
    output:
        markdown=f"{RESULTS}/leaderboard.md",
        csv=f"{RESULTS}/leaderboard.csv",
        json=f"{RESULTS}/leaderboard.json",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        f"{RESULTS}/logs/leaderboard.log",
    benchmark:
        f"{RESULTS}/benchmarks/leaderboard.tsv"
    shell:
        "python -m prunebench leaderboard --records {input} --markdown {output.markdown} --csv {output.csv} > {log} 2>&1"


if published_leaderboard():

    rule publish_leaderboard:
        """Publish the default profile's run next to the code: its records and predictions under
        reports/records (committed) and the leaderboard made from them (reports/leaderboard.*), the
        pair CI checks with `make check-leaderboard`."""
        input:
            records=all_records([LONGEST]),
            leaderboard=f"{RESULTS}/leaderboard.md",
        output:
            markdown="reports/leaderboard.md",
            csv="reports/leaderboard.csv",
            json="reports/leaderboard.json",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        log:
            f"{RESULTS}/logs/publish_leaderboard.log",
        benchmark:
            f"{RESULTS}/benchmarks/publish_leaderboard.tsv"
        shell:
            "python -m prunebench.report.published --publish {input.records} --records reports/records --published reports > {log} 2>&1"


rule report:
    """Render the self-contained HTML report (survey table, leaderboard, Pareto plots, per-layer
    sparsity, redundancy analyses, provenance) and its main figure."""
    input:
        records=all_records(),
        analysis=analysis_inputs,
        survey="prunebench/report/survey.yaml",
    output:
        html=f"{RESULTS}/report.html",
        figure=f"{RESULTS}/figures/accuracy_vs_remaining.svg",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    shell:
        "python -m prunebench report --records {input.records} --out {output.html} --figure {output.figure} > {log} 2>&1"


rule report_partial:
    """The report of whatever records exist now, e.g. during a long run (missing and failed runs
    listed): snakemake --cores 1 --nolock --forcerun report_partial report_partial"""
    output:
        html=f"{RESULTS}/report_partial.html",
    params:
        records=all_records(),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{RESULTS}/logs/report_partial.log",
    shell:
        "python -m prunebench report --records {params.records} --out {output.html} > {log} 2>&1"


rule paper_figures:
    """Every figure as vector PDF and SVG for a paper (not part of 'all'):
    snakemake --cores 2 paper_figures"""
    input:
        records=all_records(),
        analysis=analysis_inputs,
    output:
        directory(f"{RESULTS}/figures/paper"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{RESULTS}/logs/paper_figures.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper_figures.tsv"
    shell:
        "python -m prunebench.report.paper_figures --records {input.records} --out-dir {output} > {log} 2>&1"
