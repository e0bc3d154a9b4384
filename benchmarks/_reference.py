"""Shared helpers of the scikit-learn reference scripts (``reference_*.py``)."""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=None, help="the task's data folder (default: its env var, "
                                                     "else the vendored derivative)")
    parser.add_argument("--seed", type=int, default=0, help="the task's split seed (as in the suite)")
    parser.add_argument("--json", action="store_true", help="print one JSON object a row")
    return parser.parse_args()


def train_and_test(splits):
    """Reference models train on train + val (the 80% the suite's models see) and score on test."""
    train = {k: list(splits["train"].inputs[k]) + list(splits["val"].inputs[k]) for k in splits["train"].inputs}
    y_train = np.concatenate([splits["train"].labels.numpy(), splits["val"].labels.numpy()])
    return train, y_train, splits["test"].inputs, splits["test"].labels.numpy()


def report(task: str, rows: list[tuple[str, np.ndarray]], y_test: np.ndarray, as_json: bool) -> None:
    for name, pred in rows:
        scores = {"task": task, "model": name, "accuracy": round(float(accuracy_score(y_test, pred)), 3),
                  "macro_f1": round(float(f1_score(y_test, pred, average="macro")), 3),
                  "test_samples": int(len(y_test))}
        print(json.dumps(scores) if as_json else
              f"{task:22s} {name:44s} accuracy {scores['accuracy']:.3f}  macro-F1 {scores['macro_f1']:.3f}")
