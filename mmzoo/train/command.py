"""The ``mmzoo train`` command (called from :mod:`mmzoo.cli`) and the
``--task-arg key=value`` parser shared with ``mmzoo bench``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

from mmzoo.errors import InputError, NameSyntaxError

__all__ = ["train", "parse_task_args", "add_data_arguments", "parse_class_weight"]


def parse_class_weight(value: str | None) -> str | dict[str, float] | None:
    """``--class-weight``: ``balanced``, ``none`` or a JSON object ``{label: weight}``."""
    if value is None or value.strip().lower() == "none":
        return None
    if value.strip() == "balanced":
        return "balanced"
    try:
        weights = json.loads(value)
    except ValueError:
        weights = None
    if not isinstance(weights, dict):
        raise InputError(f"--class-weight {value!r}: expected 'balanced', 'none' or a JSON object "
                         '{label: weight}, e.g. --class-weight \'{"1": 3, "5": 0.5}\'')
    return weights


def parse_task_args(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["group_column=family", "fractions=(0.7,0.1,0.2)"]`` -> kwargs.

    Values are literals as in a model name (numbers, strings, booleans,
    None, tuples); a bare word or path that is no literal
    (``path=data/shards``) is taken as a string.
    """
    from mmzoo.names import parse_part

    kwargs: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"--task-arg {pair!r}: expected key=value with a Python identifier as key, "
                             "e.g. --task-arg group_column=family")
        if key in kwargs:
            raise InputError(f"--task-arg {key!r} is given twice")
        try:
            kwargs[key] = parse_part(f"task({key}={value})").kwargs[key]
        except NameSyntaxError as exc:
            if value.strip()[:1] in tuple("([{'\"") or not value.strip():
                raise InputError(f"--task-arg {pair!r}: {exc}") from None
            kwargs[key] = value.strip()  # a bare word or path
    return kwargs


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The task and data-loading flags of ``mmzoo train`` and ``mmzoo bench``."""
    parser.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="task option (repeatable), a literal as in model names, "
                             "e.g. --task-arg group_column=family")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="augment training images (default: when images are loaded per sample)")


def train(args: argparse.Namespace) -> int:
    import torch

    import mmzoo
    from mmzoo.train import FitConfig, evaluate, fit

    task_kwargs = parse_task_args(args.task_arg)
    if args.data:
        task_kwargs["data"] = args.data
    try:
        task = mmzoo.get_task(args.task, seed=args.seed, **task_kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InputError(f"task {args.task!r} does not take that option ({exc}); check the --task-arg names "
                         f"(mmzoo list tasks, and the task's docstring)") from None
    splits = task.splits()
    torch.manual_seed(args.seed)  # model initialisation; fit itself never reseeds
    model = mmzoo.create(args.name, num_classes=task.num_classes, labels=list(task.labels),
                         drop_rate=args.drop_rate)
    main = os.environ.get("RANK", "0") == "0"
    if main:
        sizes = " / ".join(f"{len(splits[s]) if hasattr(splits[s], '__len__') else '?'} {s}"
                           for s in ("train", "val", "test"))
        print(f"training {model.name} on {args.task}: {sizes} samples", file=sys.stderr)

    def log(record):
        extra = "".join(f" {k} {record[k]:.4f}" for k in ("val_accuracy", "val_macro_f1") if k in record)
        print(f"epoch {record['epoch']}: train_loss {record['train_loss']:.4f}{extra}", file=sys.stderr)

    data = {"num_workers": args.num_workers or 0, "augment": args.augment}
    config = FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, precision=args.precision,
                       modality_dropout=args.modality_dropout, patience=args.patience, out=args.out,
                       metric=args.metric, class_weight=parse_class_weight(args.class_weight),
                       seed=args.seed, device=args.device, budget_seconds=args.budget_seconds,
                       progress=not args.no_progress, log=log, **data)
    data_log = logging.getLogger("mmzoo.data")  # says how each split is fed (cache, augment, workers)
    handler = logging.StreamHandler(sys.stderr)
    previous_level = data_log.level
    if main:
        data_log.addHandler(handler)
        data_log.setLevel(logging.INFO)
    try:
        result = fit(model, splits["train"], splits["val"], config)
    finally:
        data_log.removeHandler(handler)
        data_log.setLevel(previous_level)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # under torchrun: rank 0 reports, all leave the group
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    common = dict(device=args.device, precision=args.precision, num_workers=data["num_workers"])
    test = evaluate(model, splits["test"], **common)
    summary = {"name": model.name, "task": args.task, "best_epoch": result.best_epoch,
               "val_score": result.best_score, "test_accuracy": test["accuracy"],
               "test_macro_f1": test["macro_f1"], "stopped": result.stopped, "checkpoint": result.checkpoint,
               "data": result.data}
    if len(model.inputs) > 1:
        summary["test_accuracy_missing"] = {
            slot: evaluate(model, splits["test"], drop=(slot,), **common)["accuracy"] for slot in model.inputs}
    print(json.dumps(summary, indent=2))
    return 0
