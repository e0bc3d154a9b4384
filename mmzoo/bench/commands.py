"""The ``mmzoo bench`` and ``mmzoo leaderboard`` commands
(called from :mod:`mmzoo.cli`; heavy imports happen inside)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmzoo.errors import InputError

#: bench flags that map onto suite/run settings (argparse dest -> setting)
BENCH_FLAGS = ("device", "precision", "compile", "channels_last", "batch_size", "epochs", "budget_seconds",
               "lr", "seeds", "data", "timeout", "modality_dropout", "threads", "num_workers",
               "robustness")


def bench(args: argparse.Namespace) -> int:
    import signal

    def _terminate(signum, frame):  # SIGTERM from a scheduler: stop like Ctrl-C (the worker is killed too)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        previous = None
    try:
        return _bench(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _bench(args: argparse.Namespace) -> int:
    from mmzoo.bench.runner import check_jobs, load_suite, parse_shard, pending_jobs, run_jobs

    check_jobs(args.jobs)
    shard = parse_shard(args.shard)
    overrides = {k: getattr(args, k) for k in BENCH_FLAGS if getattr(args, k, None) not in (None, False)}
    if args.no_baselines:
        overrides["baselines"] = False
    if args.augment is not None:
        overrides["augment"] = args.augment
    if args.task_arg:
        from mmzoo.train.command import parse_task_args

        overrides["task_kwargs"] = parse_task_args(args.task_arg)
    runs = []
    if args.suite:
        if args.names:
            raise InputError("give either --suite FILE or model names, not both")
        for names, task, settings in load_suite(args.suite):
            if args.task and task != args.task:
                continue
            runs.append((names, task, {**settings, **overrides}))
        out = args.out or str(Path("results") / (Path(args.suite).stem + ".jsonl"))
    else:
        if not args.names or not args.task:
            raise InputError("mmzoo bench needs model names and --task T (or --suite FILE)")
        runs.append((args.names, args.task, overrides))
        out = args.out or "results.jsonl"

    def say(message: str) -> None:
        print(message, flush=True)

    # one pool for the whole suite: a task's last jobs run beside the next task's first ones
    todo = [job for names, task, settings in runs
            for job in pending_jobs(names, task, settings, out, shard=shard, retry_failed=args.retry_failed,
                                    print_fn=say)]
    rows = run_jobs(todo, out, jobs=args.jobs, print_fn=say)
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"results: {out}" + (f" ({failed} failed row(s))" if failed else ""))
    if args.leaderboard:
        return _render(out, Path(args.leaderboard) / "leaderboard.md", Path(args.leaderboard) / "leaderboard.html",
                       Path(args.leaderboard) / "plots")
    return 0


def leaderboard(args: argparse.Namespace) -> int:
    if not Path(args.results).exists():
        raise InputError(f"results file {args.results!r} does not exist; run `mmzoo bench ... --out FILE` first")
    return _render(args.results, args.md, args.html, args.plots)


def _render(results, md, html, plots) -> int:
    from mmzoo.bench.leaderboard import render

    markdown, written = render(results, md=md, html_path=html, plots=plots)
    print(markdown)
    for path in written:
        print(f"wrote {path}")
    return 0
