rule leaderboard:
    """Rank the methods per budget (Markdown, CSV and JSON)."""
    input:
        all_records(),
    output:
        markdown=f"{RESULTS}/leaderboard.md",
        csv=f"{RESULTS}/leaderboard.csv",
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


rule report:
    """Render the self-contained HTML report and its figure."""
    input:
        all_records(),
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
        "python -m prunebench report --records {input} --out {output.html} --figure {output.figure} > {log} 2>&1"
