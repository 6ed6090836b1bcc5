"""Turning result records into the leaderboard and the HTML report.

- ``collect.py``      -- read records, aggregate over seeds (mean, std), Pareto fronts
- ``style.py``        -- the one method -> colour/marker map and figure style
- ``figures.py``      -- matplotlib figures (SVG inline in the report; PDF/SVG for papers)
- ``leaderboard.py``  -- Markdown + CSV leaderboard
- ``render.py``       -- the jinja2 HTML report (``templates/report.html.j2``)
"""
