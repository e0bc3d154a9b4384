"""The ``mmzoo train``, ``mmzoo bench`` and ``mmzoo leaderboard`` commands
(called from :mod:`mmzoo.cli`; heavy imports happen inside)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmzoo.errors import InputError

#: bench flags that map onto suite/run settings (argparse dest -> setting)
BENCH_FLAGS = ("device", "precision", "compile", "channels_last", "batch_size", "epochs", "budget_seconds",
               "lr", "seeds", "data", "timeout", "modality_dropout", "threads")


def train(args: argparse.Namespace) -> int:
    import json

    import mmzoo
    from mmzoo.train import evaluate, fit

    task_kwargs = {"data": args.data} if args.data else {}
    task = mmzoo.get_task(args.task, seed=args.seed, **task_kwargs)
    splits = task.splits()
    model = mmzoo.create(args.name, num_classes=task.num_classes, labels=list(task.labels),
                         drop_rate=args.drop_rate)
    if os.environ.get("RANK", "0") == "0":
        print(f"training {model.name} on {args.task}: {len(splits['train'])} train / {len(splits['val'])} val / "
              f"{len(splits['test'])} test samples", file=sys.stderr)

    def log(record):
        extra = "".join(f" {k} {record[k]:.4f}" for k in ("val_accuracy", "val_macro_f1") if k in record)
        print(f"epoch {record['epoch']}: train_loss {record['train_loss']:.4f}{extra}", file=sys.stderr)

    result = fit(model, splits["train"], splits["val"], epochs=args.epochs, batch_size=args.batch_size,
                 lr=args.lr, precision=args.precision, modality_dropout=args.modality_dropout,
                 patience=args.patience, out=args.out, seed=args.seed, device=args.device,
                 budget_seconds=args.budget_seconds, progress=not args.no_progress, log=log)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # under torchrun: rank 0 reports, all leave the group
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    test = evaluate(model, splits["test"], device=args.device, precision=args.precision)
    summary = {"name": model.name, "task": args.task, "best_epoch": result.best_epoch,
               "val_score": result.best_score, "test_accuracy": test["accuracy"],
               "test_macro_f1": test["macro_f1"], "stopped": result.stopped, "checkpoint": result.checkpoint}
    if len(model.inputs) > 1:
        summary["test_accuracy_missing"] = {
            slot: evaluate(model, splits["test"], drop=(slot,), device=args.device)["accuracy"]
            for slot in model.inputs}
    print(json.dumps(summary, indent=2))
    return 0


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
    from mmzoo.bench.runner import load_suite, parse_shard, run_sweep

    shard = parse_shard(args.shard)
    overrides = {k: getattr(args, k) for k in BENCH_FLAGS if getattr(args, k, None) not in (None, False)}
    if args.no_baselines:
        overrides["baselines"] = False
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
    failed = 0
    for names, task, settings in runs:
        rows = run_sweep(names, task, settings, out, shard=shard, retry_failed=args.retry_failed,
                         print_fn=lambda msg: print(msg, flush=True))
        failed += sum(r["status"] != "ok" for r in rows)
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
