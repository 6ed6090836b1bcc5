"""Everything rendered from records: leaderboards, statistics, figures, the survey table, the HTML report.

- ``collect``       -- read records and aggregate them over seeds (the rows every table uses)
- ``stats``         -- paired tests and intervals from per-example predictions
- ``uncertainty``   -- intervals, tied ranks and significance of every leaderboard entry
- ``leaderboard``   -- the leaderboard (Markdown, CSV, JSON)
- ``cross_task``    -- share of the dense metric kept per task, and its mean across tasks
- ``convergence``   -- rankings at each fine-tuning length
- ``reference``     -- converged dense references
- ``survey``        -- the survey's comparison table with measured cells (``survey.yaml``)
- ``analysis``      -- the redundancy analyses (head ablation) read for the report
- ``figures``, ``paper_figures``, ``style`` -- figures for the report and for papers
- ``render``        -- the HTML report (``templates/``)
- ``published``     -- check that the published leaderboard and report are what their records give
"""
