"""The ``mmzoo`` command.

Each subcommand is one ``_cmd_*`` function plus its parser in
``build_parser``; heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from mmzoo.errors import MMZooError


def _cmd_list(args: argparse.Namespace) -> int:
    import mmzoo

    if args.pretrained:
        from mmzoo.zoo import format_cards

        if args.kind != "models":
            raise MMZooError("--pretrained lists models: mmzoo list models --pretrained")
        print(format_cards(args.filter or ""))
        return 0

    listers = {
        "encoders": lambda f: mmzoo.list_encoders(f, modality=args.modality),
        "fusions": mmzoo.list_fusions,
        "models": mmzoo.list_models,
        "tasks": mmzoo.list_tasks,
    }
    for name in listers[args.kind](args.filter or ""):
        print(name)
    return 0


def _parameter_table(model) -> list[tuple[str, str, int, int]]:
    from mmzoo._params import count_parameters as count

    parts = [*((f"encoder[{slot}]", e) for slot, e in model.encoders.items()),
             ("fusion", model.fusion), ("head", model.head), ("total", model)]
    return [(label, "" if module is model else type(module).__name__, count(module), count(module, True))
            for label, module in parts]


def _cmd_create(args: argparse.Namespace) -> int:
    import mmzoo

    model = mmzoo.create(args.name, num_classes=args.num_classes)
    print(f"name:     {model.name}")
    print(f"inputs:   {', '.join(model.inputs)}")
    print(f"output:   {'(B, %d) logits' % model.num_classes if model.num_classes else '(B, %d) embedding' % model.num_features}")
    rows = _parameter_table(model)
    width = max(len(r[0]) for r in rows)
    kind_width = max(len(r[1]) for r in rows)
    print(f"\n{'part':<{width}}  {'module':<{kind_width}}  {'params':>12}  {'trainable':>12}")
    for part, kind, total, trainable in rows:
        print(f"{part:<{width}}  {kind:<{kind_width}}  {total:>12,}  {trainable:>12,}")
    if args.save:
        path = model.save_pretrained(args.save)
        print(f"\nsaved to {path}")
    return 0


def _plugin_components(components: list[str], everything: bool) -> str:
    if not components:
        return "-"
    shown = components if everything or len(components) <= 6 else components[:5]
    text = ", ".join(shown)
    if len(shown) < len(components):
        text += f", ... (+{len(components) - len(shown)} more; --all lists them)"
    return text


def _cmd_plugins(args: argparse.Namespace) -> int:
    """Every plugin discovery saw: name, distribution, status, components, load
    time and heavy modules pulled in by its import. Exit status 1 when a
    plugin failed to load."""
    import json
    import os
    import warnings
    from dataclasses import asdict

    from mmzoo.plugins import discover

    strict = os.environ.pop("MMZOO_STRICT_PLUGINS", None)  # list broken plugins instead of stopping
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures are shown in the table
            registry = discover()
    finally:
        if strict is not None:
            os.environ["MMZOO_STRICT_PLUGINS"] = strict
    plugins = list(registry.plugins.values())
    failed = any(p.status == "error" for p in plugins)
    if args.json:
        print(json.dumps([asdict(p) for p in plugins], indent=2))
        return 1 if failed else 0
    rows = []
    for p in plugins:
        dist = f"{p.distribution or '?'} {p.version or ''}".strip() + (" (built-in)" if p.builtin else "")
        load = f"{p.load_seconds * 1000:.1f} ms" if p.status != "disabled" else "-"
        rows.append((p.name, dist, p.status, load, ", ".join(p.heavy_imports) or "-",
                     _plugin_components(p.components, args.all)))
    header = ("PLUGIN", "DISTRIBUTION", "STATUS", "LOAD", "HEAVY IMPORTS", "COMPONENTS")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row, p in zip([header, *rows], [None, *plugins]):
        print("  ".join(f"{str(v):<{w}}" for v, w in zip(row[:5], widths)) + "  " + row[5])
        if p is not None and p.status == "error":
            print(f"{'':<{widths[0]}}  error: {p.error}")
        if p is not None and args.all and p.module:
            print(f"{'':<{widths[0]}}  module: {p.module}")
    heavy = [p.name for p in plugins if p.heavy_imports]
    if heavy:
        print(f"\nnote: importing {', '.join(heavy)} pulled in heavy modules; a plugin module should only "
              "name factories as 'module:attr' strings so that discovery stays fast.")
    return 1 if failed else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mmzoo.train.command import train

    return train(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from mmzoo.bench.commands import bench

    return bench(args)


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from mmzoo.bench.commands import leaderboard

    return leaderboard(args)


def _cmd_convert(args: argparse.Namespace) -> int:
    import json

    from mmzoo.convert import convert_checkpoint

    mapping = None
    if args.mapping:
        with open(args.mapping, encoding="utf-8") as handle:
            mapping = json.load(handle)
    data_config = {k: tuple(v) for k, v in (("mean", args.mean), ("std", args.std),
                                            ("input_size", args.input_size)) if v}
    print(convert_checkpoint(args.source, args.out, args.timm, mapping=mapping, data_config=data_config).summary())
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from mmzoo.predict import predict_command

    return predict_command(args)


def _cmd_embed(args: argparse.Namespace) -> int:
    from mmzoo.predict import embed_command

    return embed_command(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from mmzoo.export import export_command

    return export_command(args)


def build_parser() -> argparse.ArgumentParser:
    from mmzoo.train.command import add_data_arguments

    parser = argparse.ArgumentParser(prog="mmzoo", description="Multimodal models by name.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list encoders, fusions, models or tasks")
    p.add_argument("kind", nargs="?", default="models", choices=["encoders", "fusions", "models", "tasks"])
    p.add_argument("filter", nargs="?", default="", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--modality", default=None, help="encoders of this modality only")
    p.add_argument("--pretrained", action="store_true", help="zoo entries with trained weights, with scores")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("create", help="build a model by name and print its parameter table")
    p.add_argument("name", help="e.g. 'resnet18+lstm/concat'")
    p.add_argument("--num-classes", type=int, default=0)
    p.add_argument("--save", metavar="DIR", help="save the (untrained) model to DIR")
    p.set_defaults(func=_cmd_create)

    p = sub.add_parser("plugins", help="list installed plugins, their status and components")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="every component and each plugin's module")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("train", help="train a model on a task (DDP under torchrun)")
    p.add_argument("name", help="model name, e.g. 'cnn+lstm/concat'")
    p.add_argument("--task", required=True, help="task name (mmzoo list tasks)")
    p.add_argument("--data", metavar="PATH", help="data file for tasks that read one (csv)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--modality-dropout", type=float, default=None)
    p.add_argument("--drop-rate", type=float, default=0.0, help="dropout before the head")
    p.add_argument("--patience", type=int, default=5, help="early stopping (epochs)")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "macro_f1"],
                   help="validation score for early stopping and the kept epoch")
    p.add_argument("--class-weight", default=None, metavar="balanced|JSON",
                   help="weigh the loss per class: 'balanced' (n / (k * count) from the training labels) "
                        "or a JSON object {label: weight}")
    p.add_argument("--budget-seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", help="save the best checkpoint here")
    p.add_argument("--no-progress", action="store_true")
    add_data_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("bench", help="benchmark combinations, each in its own process")
    p.add_argument("names", nargs="*", help="model names; fnmatch patterns over parts, e.g. 'cnn+lstm/*'")
    p.add_argument("--task", help="task name (with --suite: run only this task)")
    p.add_argument("--suite", metavar="TOML", help="suite file (benchmarks/cpu-small.toml)")
    p.add_argument("--data", metavar="PATH")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile (time reported apart)")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--budget-seconds", type=float, help="training time budget per combination")
    p.add_argument("--lr", type=float)
    p.add_argument("--modality-dropout", type=float)
    p.add_argument("--seeds", type=int, help="seeds per combination (0..N-1)")
    p.add_argument("--threads", type=int, help="torch threads per worker")
    p.add_argument("--timeout", type=float, help="seconds per combination before it is a failed row")
    p.add_argument("--shard", metavar="K/N", help="run only the K-th of N shards (1-based)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="combinations run at once, each in its own process (default 1; with --threads 1, "
                        "up to one per core)")
    p.add_argument("--out", metavar="JSONL", help="results file (appended; rerun resumes)")
    p.add_argument("--retry-failed", action="store_true", help="rerun combinations recorded as failed")
    p.add_argument("--no-baselines", action="store_true", help="skip the single-input baselines")
    p.add_argument("--robustness", action="store_true", default=None,
                   help="also score corruption curves and mismatched pairs (mmzoo.robustness)")
    p.add_argument("--leaderboard", metavar="DIR", help="then render leaderboard.md/.html and plots/ here")
    add_data_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("leaderboard", help="render results (JSONL) as markdown, HTML and plots")
    p.add_argument("results", help="results JSONL written by mmzoo bench")
    p.add_argument("--md", metavar="OUT.md")
    p.add_argument("--html", metavar="OUT.html")
    p.add_argument("--plots", metavar="DIR")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("convert", help="convert a PyTorch checkpoint (.pth) of a timm model to safetensors")
    p.add_argument("source", help="checkpoint read with torch.load(weights_only=True)")
    p.add_argument("out", help="OUT.safetensors, loadable with <model>(pretrained='OUT.safetensors')")
    p.add_argument("--timm", required=True, metavar="MODEL", help="timm architecture, e.g. efficientnet_lite0")
    p.add_argument("--mapping", metavar="JSON", help="{checkpoint name: timm name}; default: by name or position")
    p.add_argument("--mean", type=float, nargs="+", help="normalisation the checkpoint expects")
    p.add_argument("--std", type=float, nargs="+")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input size the image processor resizes to (default: the architecture's)")
    p.set_defaults(func=_cmd_convert)

    for command, helptext in (("predict", "run a saved model over a CSV/JSONL file"),
                              ("embed", "write the fused embeddings of a CSV/JSONL file (.npy)")):
        p = sub.add_parser(command, help=helptext)
        p.add_argument("model", help="saved model folder (or zoo:NAME)")
        p.add_argument("--data", required=True, metavar="FILE", help="CSV or JSONL with the training columns")
        p.add_argument("--out", required=True, metavar="FILE",
                       help="predictions.csv" if command == "predict" else "embeddings.npy")
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--device", default=None)
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(func=_cmd_predict if command == "predict" else _cmd_embed)

    p = sub.add_parser("export", help="export a saved model to ONNX, checked against onnxruntime")
    p.add_argument("model", help="saved model folder (or zoo:NAME)")
    p.add_argument("--onnx", required=True, metavar="FILE")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4)
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMZooError as exc:
        print(f"mmzoo: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `mmzoo list encoders | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
