"""The benchmark harness: run combinations (each in its own process), record
rows in a JSONL file (:mod:`mmzoo.bench.results`), and render the leaderboard
(mean ± std and bootstrap intervals from :mod:`mmzoo.bench.stats`).

    >>> from mmzoo.bench import pending_jobs, render, run_jobs, run_sweep   # doctest: +SKIP
    >>> run_sweep(["cnn+lstm/*"], "digits-sum", {"epochs": 5}, "results.jsonl")
    >>> todo = [*pending_jobs(["cnn+lstm/*"], "digits-sum", {}, "r.jsonl"),
    ...         *pending_jobs(["cnn+gru/*"], "digits-pair", {}, "r.jsonl")]
    >>> run_jobs(todo, "r.jsonl", jobs=2)     # several sweeps in one pool, as `mmzoo bench --suite` runs them
    >>> markdown, files = render("results.jsonl", md="lb.md", html_path="lb.html", plots="plots/")

Importing this package imports no torch; measurement happens in the worker
process (:mod:`mmzoo.bench.measure`).
"""

from mmzoo.bench.leaderboard import aggregate, render, render_html, render_markdown, render_plots
from mmzoo.bench.results import append_row, read_rows
from mmzoo.bench.runner import (DEFAULTS, Job, expand_names, load_suite, parse_shard, pending_jobs, plan, run_jobs,
                                run_sweep)

__all__ = ["DEFAULTS", "Job", "append_row", "expand_names", "load_suite", "parse_shard", "plan", "read_rows",
           "pending_jobs", "run_jobs", "run_sweep", "aggregate", "render", "render_html", "render_markdown",
           "render_plots"]
