"""Train one zoo entry from its recipe and write its saved model and card.

    python plugins/mmzoo-zoo/build_zoo.py icons-efficientnetlite0-ngram      # the recipe in recipes.toml
    python plugins/mmzoo-zoo/build_zoo.py NEW --model "cnn+lstm/concat" --task icons --epochs 5

runs from the repository root. The recipe (``recipes.toml``, flags override
its fields) names the model, task, training settings, how the weights are
stored, and the pretrained files the model needs (declarative
``[ENTRY.pretrained.KEY]`` specs, made once by :mod:`mmzoo.converted` and
checked against their SHA-256). It writes
``mmzoo_zoo/entries/<entry>/`` (``config.json``, ``model.safetensors``,
``processor/`` as saved by ``save_pretrained``) and ``card.json``: the
canonical name, the task and split, test accuracy and macro-F1 with the
seed, scores on every ``--subset-stride``-th test sample (a fast subset with
every class, which the test suite reproduces), the training command, the
weights' SHA-256, dtype and size, the pretrained files by SHA-256, and the
data's license. ``store = "float16"`` writes the weights in half precision
(upcast to float32 on load); the scores are those of the rounded weights,
and the card also records the float32 model's. The plugin registers every
entry folder it finds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRIES = HERE / "mmzoo_zoo" / "entries"
ENTRIES_DIR = str(ENTRIES)  # a git pathspec (absolute paths inside the work tree are allowed)
RECIPES = HERE / "recipes.toml"
MAX_BYTES = 10 * 1024 * 1024
LICENSES = {
    "fsdd-digits": "FSDD recordings: CC BY-SA 4.0 (Jakobovski/free-spoken-digit-dataset); "
                   "scikit-learn digits (UCI optdigits): CC BY 4.0",
    "icons": "tabler icons: MIT",
    "reviews": "Women's E-Commerce Clothing Reviews: CC0",
}
FIELDS = ("model", "task", "data", "epochs", "batch_size", "lr", "seed", "augment", "class_weight", "metric", "store",
          "description")


def subset(split, stride: int):
    """Every ``stride``-th sample of a split (raw lists or tensors)."""
    from mmzoo.tasks import Split

    return Split({k: v[::stride] for k, v in split.inputs.items()}, split.labels[::stride])


def recipe(entry: str, args: argparse.Namespace) -> dict:
    """The entry's recipe with the flags given on the command line on top."""
    recipes = tomllib.loads(RECIPES.read_text(encoding="utf-8"))
    out = {"epochs": 8, "batch_size": 64, "lr": 2e-3, "seed": 0, "store": "float32", "description": "",
           **recipes.get(entry, {})}
    out.update({k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None})
    missing = [k for k in ("model", "task") if not out.get(k)]
    if missing:
        raise SystemExit(f"{entry}: no recipe in {RECIPES.name} and no --{' --'.join(missing)}")
    if out["store"] not in ("float32", "float16"):
        raise SystemExit(f"{entry}: store must be float32 or float16, got {out['store']!r}")
    return out


def pretrained_files(model: str, build_dir: Path | None) -> tuple[dict[str, str], list[dict]]:
    """The converted files ``model`` uses as ``{KEY}``, from the recipes' top-level
    ``[pretrained.KEY]`` tables (as in bench suites): ``{KEY: path}`` (made once into
    ``build_dir``, default ``$MMZOO_CACHE/converted``) and their provenance for the card."""
    from mmzoo.converted import parse_specs, placeholders, prepare

    specs = parse_specs(tomllib.loads(RECIPES.read_text(encoding="utf-8")).get("pretrained"), RECIPES.name)
    unknown = sorted(set(placeholders(model)) - set(specs))
    if unknown:
        raise SystemExit(f"{model}: no [pretrained.KEY] table in {RECIPES.name} for {unknown}; "
                         f"defined: {sorted(specs) or 'none'}")
    paths, provenance = {}, []
    for key in dict.fromkeys(placeholders(model)):
        paths[key] = str(prepare(specs[key], build_dir))
        print(f"pretrained file {{{key}}} = {paths[key]} ({specs[key].command_line()})", flush=True)
        provenance.append(specs[key].provenance())
    return paths, provenance


def store_float16(folder: Path) -> None:
    """Rewrite the saved weights in half precision (floating tensors only) and
    record their SHA-256 in ``config.json``."""
    from safetensors.torch import load_file, save

    from mmzoo.weights import atomic_write

    state = load_file(str(folder / "model.safetensors"))
    blob = save({k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    atomic_write(folder / "model.safetensors", blob)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write(folder / "config.json", (json.dumps(config, indent=2, sort_keys=True)).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entry", help="entry name (zoo:<entry>); its recipe in recipes.toml, if any, is used")
    parser.add_argument("--model", help="model name")
    parser.add_argument("--task")
    parser.add_argument("--data", help="data folder/file of the task")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--augment", type=lambda v: v.lower() in ("1", "true", "yes"), help="true/false")
    parser.add_argument("--class-weight", help="'balanced' or none (default: the recipe's, else none)")
    parser.add_argument("--metric", choices=("accuracy", "macro_f1"), help="validation metric that picks the epoch")
    parser.add_argument("--store", choices=("float32", "float16"), help="dtype of the stored weights")
    parser.add_argument("--subset-stride", type=int, default=5, help="the test suite re-scores every N-th test sample")
    parser.add_argument("--license", help="data license (default: known per task)")
    parser.add_argument("--description")
    parser.add_argument("--build-dir", type=Path, help="where pretrained files are made "
                        "(default: $MMZOO_CACHE/converted)")
    args = parser.parse_args(argv)
    spec = recipe(args.entry, args)

    import torch

    import mmzoo
    from mmzoo.bench.results import PUBLISHED_DIR, git_sha
    from mmzoo.train import evaluate, fit
    from mmzoo.train.command import parse_class_weight

    from mmzoo.converted import fill_placeholders

    # the code the entry is built from: taken before anything is written (the entries
    # themselves are outputs, as benchmarks/results/ is for rows)
    code_sha = git_sha(outputs=(PUBLISHED_DIR, ENTRIES_DIR))
    paths, pretrained = pretrained_files(spec["model"], args.build_dir)
    name = fill_placeholders(spec["model"], paths)
    torch.manual_seed(spec["seed"])
    task = mmzoo.get_task(spec["task"], **({"data": spec["data"]} if spec.get("data") else {}), seed=spec["seed"])
    splits = task.splits()
    model = mmzoo.create(name, num_classes=task.num_classes, labels=list(task.labels))
    result = fit(model, splits["train"], splits["val"], epochs=spec["epochs"], batch_size=spec["batch_size"],
                 lr=spec["lr"], seed=spec["seed"], progress=False, augment=spec.get("augment"),
                 class_weight=parse_class_weight(spec.get("class_weight")), metric=spec.get("metric") or "accuracy",
                 log=lambda r: print(json.dumps(r), flush=True))
    float32_test = None
    if spec["store"] == "float16":
        float32_test = evaluate(model, splits["test"])
        with torch.no_grad():  # the shipped weights: scored as they will be loaded
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    test = evaluate(model, splits["test"])
    quick = evaluate(model, subset(splits["test"], args.subset_stride))
    folder = ENTRIES / args.entry
    model.save_pretrained(folder)
    if spec["store"] == "float16":
        store_float16(folder)
    weights = (folder / "model.safetensors").read_bytes()
    if len(weights) > MAX_BYTES:
        raise SystemExit(f"{args.entry}: {len(weights):,} bytes of weights exceed the 10 MB budget")
    command = shlex.join(["python", "plugins/mmzoo-zoo/build_zoo.py", *(argv if argv is not None else sys.argv[1:])])
    card = {
        "entry": args.entry,
        "name": model.name,
        "description": spec["description"] or f"{model.name} trained on {spec['task']}",
        "task": spec["task"],
        "split": {"trained_on": "train", "selected_on": "val", "scored_on": "test",
                  "sizes": {k: len(v) for k, v in splits.items()}},
        "seed": spec["seed"],
        "test_accuracy": round(test["accuracy"], 4),
        "test_macro_f1": round(test["macro_f1"], 4),
        "subset": {"every_nth_test": args.subset_stride, "accuracy": quick["accuracy"],
                   "macro_f1": quick["macro_f1"]},
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 1),
        "training": {k: spec.get(k) for k in ("epochs", "batch_size", "lr", "augment", "class_weight", "metric")}
                    | {"frozen_cache": result.data.get("frozen_cache", [])},
        "command": command,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
        "weights_dtype": spec["store"],
        "data_license": args.license or LICENSES.get(spec["task"], "see the task's documentation"),
        "mmzoo_version": mmzoo.__version__,
        "git_sha": code_sha,
    }
    if float32_test is not None:
        card["float32_test"] = {"accuracy": round(float32_test["accuracy"], 4),
                                "macro_f1": round(float32_test["macro_f1"], 4)}
    if pretrained:
        card["pretrained_files"] = pretrained
    from mmzoo.weights import atomic_write

    atomic_write(folder / "card.json", (json.dumps(card, indent=2) + "\n").encode())
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
