"""Turning result records into the leaderboard, the HTML report and paper figures.

- ``collect.py``        -- read records defensively (missing/failed runs), aggregate over seeds,
                           Pareto fronts, Snakemake benchmark files
- ``survey.yaml``       -- the survey's comparison table and the papers' claims (tagged V/S/U)
- ``survey.py``         -- the survey table, measured: claims beside our numbers, agree/disagree
- ``analysis.py``       -- reading the redundancy analyses (head ablation JSON)
- ``style.py``          -- the one method -> colour/marker map and figure style (report, paper)
- ``figures.py``        -- matplotlib figures (SVG data URIs in the report; PDF/SVG for papers)
- ``leaderboard.py``    -- Markdown + CSV + JSON leaderboard
- ``render.py``         -- the jinja2 HTML report (``templates/report.html.j2``)
- ``paper_figures.py``  -- every figure as PDF and SVG (``snakemake --cores 2 paper_figures``)
"""
