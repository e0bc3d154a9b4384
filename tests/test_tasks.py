"""Built-in tasks: registration, splits, the information each input carries,
the ``csv`` task's reading and errors, the real tasks' data and splits.
Fast: one tiny training run."""

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
    ("empty_row", r"line 4: every input is empty"),
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
    elif problem == "empty_row":
        kwargs["image_column"] = ""
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
    from mmzoo.train import evaluate

    test = mmzoo.get_task("csv", data=str(tmp_path / "data.csv")).splits()["test"]
    assert summary["task"] == "csv"
    assert summary["test_accuracy"] == pytest.approx(evaluate(mmzoo.load(tmp_path / "run"), test)["accuracy"])
    assert set(summary["test_accuracy_missing"]) == {"image", "text"}
    assert mmzoo.load(tmp_path / "run").labels == ["0", "1"]
    assert main(["train", name, "--task", "csv", "--epochs", "1"]) == 2          # no --data: a clear error
    assert "pass data=PATH" in capsys.readouterr().err


# ------------------------------------------------------------- tables and several texts
def _write_table(path, n=40):
    """A small product table: two text columns, two numeric and two categorical ones, empty cells."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "body", "age", "votes", "dept", "size", "label"])
        for i in range(n):
            writer.writerow([
                "" if i % 5 == 0 else f"title {i}",
                f"line one\nline two, quoted {i}" if i % 3 else "",       # a quoted newline stays in the text
                "" if i % 4 == 0 else str(20 + i),
                str(i % 6),
                ["dresses", "tops", "bottoms"][i % 3],
                "" if i % 7 == 0 else ["S", "M"][i % 2],
                "good" if i % 2 else "bad",
            ])


def test_csv_task_with_several_texts_and_table_columns(tmp_path):
    _write_table(tmp_path / "t.csv")
    # as the issue writes it: no image_column (the file has no `image` column, so no image input)
    task = mmzoo.get_task("csv", data=tmp_path / "t.csv", text_columns="title,body",
                          numeric_columns=["age", "votes"], categorical_columns=["dept", "size"])
    assert task.inputs == ("text", "tabular") and task.labels == ["bad", "good"]
    splits = task.splits()
    rows = {t: r for s in splits.values() for t, r in zip(s.inputs["text"], s.inputs["tabular"])}
    assert "title 1 | line one\nline two, quoted 1" in rows                   # joined, newline kept
    assert rows["line one\nline two, quoted 5"]["age"] == 25.0            # empty title: only the body
    assert rows["title 3"] == {"age": 23.0, "votes": 3.0, "dept": "dresses", "size": "M"}
    assert rows["title 12"]["age"] is None and rows["title 21"]["size"] is None  # empty cells -> missing
    assert "" in rows                                                      # both texts empty: a missing text
    # a model trains on it end to end (the tabular processor is fitted on the training rows)
    from mmzoo.train import evaluate, fit

    model = mmzoo.create("tab_mlp(hidden=16)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/concat",
                         num_classes=task.num_classes, labels=task.labels)
    fit(model, splits["train"], splits["val"], epochs=1, batch_size=8, progress=False)
    assert model.encoders["tabular"].schema == {"numeric": ["age", "votes"],
                                                "categorical": [["dept", 3], ["size", 2]]}
    test = splits["test"]
    predicted, _ = model.eval().predict(model.processor(**test.inputs))  # the raw rows, batched by hand
    expected = sum(p == task.labels[y] for p, y in zip(predicted, test.labels.tolist())) / len(test.labels)
    assert evaluate(model, test)["accuracy"] == pytest.approx(expected)


def test_csv_task_separate_texts_and_detected_columns(tmp_path, capsys):
    _write_table(tmp_path / "t.csv")
    task = mmzoo.get_task("csv", data=tmp_path / "t.csv", image_column="", text_columns=["title", "body"],
                          separate_texts=True, numeric_columns="votes")
    assert task.inputs == ("text", "text_2", "tabular")
    train = task.splits()["train"]
    assert all(t == "" or t.startswith("title") for t in train.inputs["text"])
    assert all(t == "" or t.startswith("line one") for t in train.inputs["text_2"])

    detected = mmzoo.get_task("csv", data=tmp_path / "t.csv", detect_columns=True)
    assert (detected.text_columns, detected.numeric_columns, detected.categorical_columns) == \
        (["title", "body"], ["age", "votes"], ["dept", "size"])
    assert detected.inputs == ("text", "tabular")
    said = capsys.readouterr().err
    assert "detected columns" in said and "numeric ['age', 'votes']" in said and "categorical ['dept', 'size']" in said


def test_csv_task_default_columns_are_used_when_present_and_named_ones_must_exist(tmp_path):
    _write_table(tmp_path / "t.csv")
    with pytest.raises(InputError, match=r"has no column\(s\) \['image'\]"):    # named: must exist
        mmzoo.get_task("csv", data=tmp_path / "t.csv", image_column="image", text_columns="title")
    with pytest.raises(InputError, match=r"needs at least one input column: .*t.csv has no 'image' or 'text' "
                                         r"column \(it has \['age', 'body'"):
        mmzoo.get_task("csv", data=tmp_path / "t.csv")
    (tmp_path / "u.csv").write_text("text,label,extra\nred car,a,1\nblue bus,b,2\n" * 3)
    assert mmzoo.get_task("csv", data=tmp_path / "u.csv").inputs == ("text",)   # the default `text` column


def test_csv_task_numeric_column_with_text_is_an_error(tmp_path):
    _write_table(tmp_path / "t.csv")
    with pytest.raises(InputError, match=r"line 2: column 'dept' is numeric but holds 'dresses'"):
        mmzoo.get_task("csv", data=tmp_path / "t.csv", image_column="", text_column="", numeric_columns="dept")


def test_csv_task_reads_compressed_files(tmp_path):
    import gzip

    _write_table(tmp_path / "t.csv")
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress((tmp_path / "t.csv").read_bytes()))
    plain, packed = (mmzoo.get_task("csv", data=tmp_path / name, image_column="", text_columns="title,body",
                                    numeric_columns="votes")
                     for name in ("t.csv", "t.csv.gz"))
    assert plain.splits()["test"].inputs["text"] == packed.splits()["test"].inputs["text"]


# ------------------------------------------------------------- hostile files (issue 9, item 12)
def test_csv_task_long_fields_and_the_field_limit(tmp_path, monkeypatch):
    import csv

    from mmzoo import _rows as rows_module

    long = "word " * 40_000                                      # 200,000 chars > Python's csv default 131,072
    path = tmp_path / "long.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"], [long, "a"], ["short", "b"], ["x", "a"], ["y", "b"], ["z", "a"]])
    task = mmzoo.get_task("csv", data=path, image_column="")
    assert long.strip() in [t for s in task.splits().values() for t in s.inputs["text"]]
    assert csv.field_size_limit() == 131_072                     # the process-wide limit is restored
    monkeypatch.setattr(rows_module, "MAX_FIELD_CHARS", 1000)
    with pytest.raises(InputError, match=r"long.csv:2: a field is longer than 1,000 characters"):
        mmzoo.get_task("csv", data=path, image_column="")


def test_csv_task_keeps_quoted_newlines_and_line_separators(tmp_path):
    import csv

    texts = ["first\nsecond", "para\u2028graph", "a\r\nb", "plain", "end"]
    path = tmp_path / "d.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *[[t, str(i % 2)] for i, t in enumerate(texts)]])
    task = mmzoo.get_task("csv", data=path, image_column="")
    assert sorted(t for s in task.splits().values() for t in s.inputs["text"]) == sorted(texts)


def test_csv_task_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\nok,\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 4: empty label"):
        mmzoo.get_task("csv", data=path, image_column="")


def test_csv_task_decompression_bomb_is_an_input_error(tmp_path, monkeypatch):
    from PIL import Image

    _write_images(tmp_path, 4)
    _write_csv(tmp_path / "d.csv", [(f"{i}.png", f"t{i}", "a", "g") for i in range(4)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)          # the 8x8 test images are now "bombs"
    with pytest.raises(InputError, match="line 2: cannot read image .*decompression bomb"):
        mmzoo.get_task("csv", data=tmp_path / "d.csv")


def test_csv_task_deep_jsonl_is_an_input_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n' + '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
                    encoding="utf-8")
    with pytest.raises(InputError, match=r"d.jsonl:2: the JSON is nested too deeply"):
        mmzoo.get_task("csv", data=path, image_column="")


def test_csv_task_bad_bytes_are_an_input_error(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"text,label\n\xff\xfe,a\n")
    with pytest.raises(InputError, match="cannot read"):
        mmzoo.get_task("csv", data=tmp_path / "d.csv", image_column="")


# ------------------------------------------------------------- real tasks (vendored derivative)
def test_icons_task_split_is_grouped_by_the_name_family():
    from mmzoo.builtin.real_tasks import vendored

    assert vendored("icons48.npz").is_file()
    task = mmzoo.get_task("icons", seed=0)
    assert task.inputs == ("image", "text") and task.num_classes == 41
    splits = task.splits()
    assert sum(len(s) for s in splits.values()) == 5166
    families = [{t.split(" ")[0] for t in splits[s].inputs["text"]} for s in SPLITS]
    assert all(families) and not (families[0] & families[1] or families[0] & families[2] or families[1] & families[2])
    assert {"arrow", "brand"} <= set().union(*families)
    image = splits["train"].inputs["image"][0]
    assert image.shape == (48, 48) and image.dtype.name == "uint8"
    assert image.min() < 100 and np.median(image) == 255        # dark strokes on white, not an all-black square
    other = mmzoo.get_task("icons", seed=1).splits()
    assert [len(s) for s in other.values()] != [len(s) for s in splits.values()]


def test_reviews_tasks_on_the_vendored_data():
    task = mmzoo.get_task("reviews", seed=0)
    assert task.inputs == ("text", "tabular") and task.labels == ["1", "2", "3", "4", "5"]
    splits = task.splits()
    assert sum(len(s) for s in splits.values()) == 23486 - 844           # no title and no text: left out
    assert len(splits["test"]) == pytest.approx((23486 - 844) * 0.2, abs=2)
    rows = [r for s in splits.values() for r in s.inputs["tabular"]]
    assert set(rows[0]) == {"Age", "Positive Feedback Count", "Division Name", "Department Name", "Class Name"}
    assert sum(r["Department Name"] is None for r in rows) == 13        # real missing cells stay missing
    assert all(splits["test"].inputs["text"])
    everything = mmzoo.get_task("reviews", seed=0, keep_textless=True).splits()
    assert sum(t == "" for s in everything.values() for t in s.inputs["text"]) == 844   # a missing text
    recommended = mmzoo.get_task("reviews-recommended", seed=0)
    assert recommended.labels == ["0", "1"]
    assert recommended.splits()["test"].inputs["text"] == splits["test"].inputs["text"]  # the same rows


def test_real_tasks_read_raw_folders_and_say_what_is_missing(tmp_path, monkeypatch):
    import shutil

    from mmzoo.builtin import real_tasks

    raw = tmp_path / "reviews"
    raw.mkdir()
    import lzma

    import csv
    import io

    text = lzma.decompress(real_tasks.vendored("reviews.csv.xz").read_bytes()).decode("utf-8")
    with open(raw / "reviews.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(list(csv.reader(io.StringIO(text, newline="")))[:81])
    monkeypatch.setenv("MMZOO_REVIEWS_DATA", str(raw))
    task = mmzoo.get_task("reviews")
    assert task.path == raw / "reviews.csv" and 10 < len(task.splits()["train"]) < 100
    monkeypatch.setenv("MMZOO_REVIEWS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match=r"\$MMZOO_REVIEWS_DATA .*nowhere' does not exist. Get the Women's"):
        mmzoo.get_task("reviews")
    monkeypatch.delenv("MMZOO_REVIEWS_DATA")
    monkeypatch.setattr(real_tasks, "vendored", lambda name: tmp_path / "not-installed" / name)
    with pytest.raises(InputError, match="vendored icons48.npz is not installed and \\$MMZOO_ICONS_DATA is unset"):
        mmzoo.get_task("icons")
    with pytest.raises(InputError, match="holds neither icons.json nor icons48.npz"):
        mmzoo.get_task("icons", data=tmp_path)
    # a raw icons folder: PNGs with the picture in the alpha channel are composited on white
    from PIL import Image

    icons = tmp_path / "tabler"
    (icons / "icons" / "outline").mkdir(parents=True)
    meta = {}
    for i, name in enumerate(["arrow-left", "arrow-right", "brand-x", "cat", "dog-off", "egg", "fish", "gift"]):
        rgba = np.zeros((24, 24, 4), np.uint8)
        rgba[4:20, 10:14, 3] = 255                                   # a black bar, opaque; the rest transparent
        Image.fromarray(rgba, "RGBA").save(icons / "icons" / "outline" / f"{name}.png")
        meta[name] = {"name": name, "category": "AB"[i % 2], "styles": {"outline": {}}}
    (icons / "icons.json").write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(tmp_path / "reviews")
    task = mmzoo.get_task("icons", data=icons)
    images = [im for s in task.splits().values() for im in s.inputs["image"]]
    assert len(images) == 8 and images[0][24, 2] == 255 and images[0][24, 24] == 0
