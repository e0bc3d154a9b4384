"""Built-in tasks: registration, splits, the information each input carries,
and the ``csv`` task's reading and errors. No training here (fast)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import numpy as np
import pytest

import mmzoo
from mmzoo.errors import InputError
from mmzoo.tasks import SPLITS, split_indices


def test_tasks_are_registered_and_listed():
    assert {"digits-sum", "digits-pair", "csv"} <= set(mmzoo.list_tasks())
    assert mmzoo.list_tasks("digits-*") == ["digits-pair", "digits-sum"]


def test_split_indices_keep_groups_together_and_are_seeded():
    groups = [i // 3 for i in range(300)]
    parts = split_indices(300, seed=1, groups=groups)
    assert sorted(i for p in parts.values() for i in p) == list(range(300))
    owner = {}
    for split, idx in parts.items():
        for i in idx:
            assert owner.setdefault(groups[i], split) == split
    assert split_indices(300, seed=1, groups=groups) == parts
    assert split_indices(300, seed=2, groups=groups) != parts
    assert abs(len(parts["train"]) - 180) <= 3


def _number(text: str) -> int:
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    for token in re.findall(r"[a-z]+|\d", text):
        if token.isdigit():
            return int(token)
        if token in words:
            return words.index(token)
    raise AssertionError(f"no number in {text!r}")


def _lookup_accuracy(train_keys, train_labels, test_keys, test_labels) -> float:
    """Accuracy of the best classifier that sees only ``key`` (majority label per key)."""
    votes = defaultdict(Counter)
    for k, y in zip(train_keys, train_labels):
        votes[k][y] += 1
    hits = sum(votes[k].most_common(1)[0][0] == y if votes[k] else False for k, y in zip(test_keys, test_labels))
    return hits / len(test_labels)


def _keys(split):
    from sklearn.datasets import load_digits

    target = load_digits().target
    digits = [int(target[g]) for g in split.groups]        # groups are image indices
    numbers = [_number(t) for t in split.inputs["text"]]
    return digits, numbers, split.labels.tolist()


def test_digits_sum_needs_both_inputs():
    task = mmzoo.get_task("digits-sum", seed=0)
    assert task.inputs == ("image", "text") and task.num_classes == 10
    splits = task.splits()
    assert set(splits) == set(SPLITS)
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 2 * 1797
    image = splits["train"].inputs["image"][0]
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (8, 8)
    # no image is shared between splits
    seen = [set(splits[s].groups) for s in SPLITS]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    (d_tr, n_tr, y_tr), (d_te, n_te, y_te) = _keys(splits["train"]), _keys(splits["test"])
    assert all((d + n) % 10 == y for d, n, y in zip(d_tr, n_tr, y_tr))
    # the best possible single-input classifiers stay near chance (0.1); both together are perfect
    assert _lookup_accuracy(d_tr, y_tr, d_te, y_te) < 0.2
    assert _lookup_accuracy(n_tr, y_tr, n_te, y_te) < 0.2
    assert _lookup_accuracy(list(zip(d_tr, n_tr)), y_tr, list(zip(d_te, n_te)), y_te) == 1.0


def test_digits_pair_is_redundant():
    splits = mmzoo.get_task("digits-pair", seed=3).splits()
    (d_tr, n_tr, y_tr), (d_te, n_te, y_te) = _keys(splits["train"]), _keys(splits["test"])
    assert _lookup_accuracy(d_tr, y_tr, d_te, y_te) == 1.0
    assert _lookup_accuracy(n_tr, y_tr, n_te, y_te) == 1.0


def test_digits_tasks_are_seeded_and_limitable():
    a = mmzoo.get_task("digits-sum", seed=0, limit=100).splits()
    b = mmzoo.get_task("digits-sum", seed=0, limit=100).splits()
    c = mmzoo.get_task("digits-sum", seed=1, limit=100).splits()
    assert a["test"].inputs["text"] == b["test"].inputs["text"]
    assert a["test"].groups != c["test"].groups
    assert sum(len(s) for s in a.values()) == 200
    with pytest.raises(InputError, match="takes no data"):
        mmzoo.get_task("digits-pair", data="x.csv")


# ------------------------------------------------------------------ csv
def _write_images(folder, n):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((6, 6, 3), i * 20 % 255, dtype=np.uint8)).save(folder / f"{i}.png")


def _write_csv(path, rows, header=("image", "text", "label", "speaker")):
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_csv_task_reads_paths_relative_to_the_file_and_keeps_groups(tmp_path):
    _write_images(tmp_path / "img", 40)
    rows = [(f"img/{i}.png", f"sample {i}", "cat" if i % 2 else "dog", f"s{i // 4}") for i in range(40)]
    _write_csv(tmp_path / "data.csv", rows)
    task = mmzoo.get_task("csv", data=str(tmp_path / "data.csv"), group_column="speaker", seed=0)
    assert task.labels == ["cat", "dog"] and task.inputs == ("image", "text")
    splits = task.splits()
    assert sum(len(s) for s in splits.values()) == 40
    groups = [set(splits[s].groups) for s in SPLITS]
    assert all(groups) and not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    first = splits["train"].inputs["image"][0]
    assert first.startswith(str(tmp_path)) and first.endswith(".png")
    # the model's processor reads the paths
    model = mmzoo.create("cnn(channels=(4,),img_size=8)+lstm(hidden_size=8,embed_dim=8,vocab_size=300)/concat",
                         num_classes=task.num_classes)
    batch = model.processor(image=splits["test"].inputs["image"][:2], text=splits["test"].inputs["text"][:2])
    assert model(**batch).shape == (2, 2)


def test_csv_task_jsonl_custom_columns_and_fixed_labels(tmp_path):
    lines = [json.dumps({"caption": f"text {i}", "y": str(i % 3)}) for i in range(30)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines), encoding="utf-8")
    task = mmzoo.get_task("csv", data=tmp_path / "d.jsonl", image_column="", text_column="caption",
                          label_column="y", labels="2,1,0")
    assert task.inputs == ("text",) and task.labels == ["2", "1", "0"]
    train = task.splits()["train"]
    assert all(task.labels[y] == str(int(t.split()[1]) % 3) for t, y in zip(train.inputs["text"], train.labels.tolist()))


@pytest.mark.parametrize("problem, match", [
    ("missing_file", "does not exist"),
    ("missing_column", r"no column\(s\) \['label'\]"),
    ("missing_image", r"line 3: image file .* does not exist"),
    ("bad_image", r"line 2: cannot read image"),
    ("empty_text", r"line 4: empty text"),
    ("unknown_label", r"line 2: unknown label 'dog'"),
    ("no_data", "pass data=PATH"),
])
def test_csv_task_errors_are_clear(tmp_path, problem, match):
    _write_images(tmp_path, 4)
    rows = [(f"{i}.png", f"t{i}", "dog", "g") for i in range(4)]
    kwargs = {"data": str(tmp_path / "d.csv")}
    header = ("image", "text", "label", "speaker")
    if problem == "missing_file":
        kwargs["data"] = str(tmp_path / "nope.csv")
    elif problem == "missing_column":
        header = ("image", "text", "klass", "speaker")
    elif problem == "missing_image":
        rows[1] = ("gone.png", "t", "dog", "g")
    elif problem == "bad_image":
        (tmp_path / "0.png").write_bytes(b"not an image")
    elif problem == "empty_text":
        rows[2] = ("2.png", "  ", "dog", "g")
    elif problem == "unknown_label":
        kwargs["labels"] = ["cat"]
    elif problem == "no_data":
        kwargs = {}
    _write_csv(tmp_path / "d.csv", rows, header)
    with pytest.raises(InputError, match=match):
        mmzoo.get_task("csv", **kwargs).splits()


def test_csv_task_too_few_groups_is_an_error(tmp_path):
    _write_images(tmp_path, 4)
    _write_csv(tmp_path / "d.csv", [(f"{i}.png", "t", "a", "same") for i in range(4)])
    with pytest.raises(InputError, match="split is empty"):
        mmzoo.get_task("csv", data=tmp_path / "d.csv", group_column="speaker").splits()


def test_mmzoo_train_cli_on_a_csv_file(tmp_path, capsys):
    from mmzoo.cli import main

    _write_images(tmp_path / "img", 30)
    _write_csv(tmp_path / "data.csv", [(f"img/{i}.png", f"a {'cat' if i % 2 else 'dog'} photo", i % 2, f"g{i // 3}")
                                       for i in range(30)])
    name = "cnn(channels=(4,),img_size=8)+lstm(hidden_size=8,embed_dim=8,vocab_size=300)/concat"
    assert main(["train", name, "--task", "csv", "--data", str(tmp_path / "data.csv"), "--epochs", "2",
                 "--batch-size", "8", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "csv" and 0.0 <= summary["test_accuracy"] <= 1.0
    assert set(summary["test_accuracy_missing"]) == {"image", "text"}
    assert mmzoo.load(tmp_path / "run").labels == ["0", "1"]
    assert main(["train", name, "--task", "csv", "--epochs", "1"]) == 2          # no --data: a clear error
    assert "pass data=PATH" in capsys.readouterr().err
