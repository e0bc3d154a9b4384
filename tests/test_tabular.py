"""Tabular inputs: the processor (fit, save, load), the tab_mlp and ft_transformer encoders."""

import json
import math

import numpy as np
import pytest
import torch

import mmzoo
from mmzoo.builtin.tabular import FTTransformerEncoder, TabMLPEncoder
from mmzoo.builtin.tabular_processor import MISSING_ID, UNSEEN_ID, TabularProcessor
from mmzoo.errors import InputError
from mmzoo.testing import check_encoder

SCHEMA = {"numeric": ["age", "score"], "categorical": [["dept", 3], ["size", 2]]}
TEXT = "lstm(vocab_size=300,embed_dim=8,hidden_size=8)"


def _rows(n=24):
    depts, sizes = ["dresses", "tops", "jackets"], ["S", "M"]
    return [{"age": 20 + i, "score": None if i % 5 == 0 else float(i % 7), "dept": depts[i % 3],
             "size": "" if i % 4 == 0 else sizes[i % 2]} for i in range(n)]


def test_processor_fits_statistics_and_vocabularies():
    rows = _rows()
    p = TabularProcessor().fit(rows)
    assert p.schema() == {"numeric": ["age", "score"], "categorical": [["dept", 3], ["size", 2]]}
    ages = [r["age"] for r in rows]
    mean = sum(ages) / len(ages)
    std = math.sqrt(sum((a - mean) ** 2 for a in ages) / len(ages))
    out = p([{"age": 30, "dept": "tops", "size": "XXL"}, {}, None])
    assert torch.allclose(out["numeric"][0, 0], torch.tensor((30 - mean) / std))
    assert out["numeric_missing"].tolist() == [[False, True], [True, True], [True, True]]
    assert (out["numeric"][out["numeric_missing"]] == 0).all()
    tops = 2 + p.columns[2]["vocabulary"].index("tops")
    assert out["categorical"].tolist() == [[tops, UNSEEN_ID], [MISSING_ID, MISSING_ID], [MISSING_ID, MISSING_ID]]


def test_processor_vocabulary_cap_keeps_the_most_frequent():
    p = TabularProcessor(max_categories=2).fit([{"c": v} for v in "aaabbc"])
    assert p.columns[0]["vocabulary"] == ["a", "b"]
    assert p([{"c": "c"}])["categorical"].item() == UNSEEN_ID


def test_processor_save_load_round_trip_is_exact(tmp_path):
    p = TabularProcessor().fit(_rows())
    p.save(tmp_path)
    q = TabularProcessor()
    q.load(tmp_path)
    assert q.columns == p.columns and q.schema() == p.schema()
    probe = [{"age": 27.3, "score": 1.5, "dept": "unknown", "size": "S"}, {"dept": "tops"}, {"score": float("nan")}]
    a, b = p(probe), q(probe)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "tabular.json").read_text())["columns"][0]["name"] == "age"


def test_processor_takes_dicts_rows_and_arrays():
    p = TabularProcessor().fit(np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]]))
    assert p.schema() == {"numeric": ["0", "1"], "categorical": []}
    from_array = p(np.array([[1.0, np.nan]]))
    from_rows = p([[1.0, None]])
    from_dicts = p([{"0": 1.0}])
    for out in (from_rows, from_dicts):
        assert all(torch.equal(out[k], from_array[k]) for k in out)
    assert from_array["numeric_missing"].tolist() == [[False, True]]


@pytest.mark.parametrize("values, match", [
    ([{"agee": 3}], r"unknown column\(s\) \['agee'\]"),
    ([{"age": "old"}], r"row 0, column 'age': 'old' is not a number"),
    ([{"age": float("inf")}], "infinite"),
    ([[1, 2]], "has 2 values for 4 columns"),
    ("age", "list of rows"),
    (np.zeros((2, 2, 2)), "must be 2-D"),
])
def test_processor_rejects_bad_rows(values, match):
    p = TabularProcessor().fit(_rows())
    with pytest.raises(InputError, match=match):
        p(values)


def test_unfitted_processor_and_encoder_say_to_fit():
    model = mmzoo.create(f"tab_mlp+{TEXT}/concat", num_classes=2)
    with pytest.raises(InputError, match=r"model.processor.fit\(train_split\)"):
        model.processor(tabular=[{"a": 1}])
    with pytest.raises(InputError, match="no columns yet"):
        model(tabular={"numeric": torch.zeros(1, 1), "numeric_missing": torch.zeros(1, 1, dtype=torch.bool),
                       "categorical": torch.zeros(1, 0, dtype=torch.long)})


@pytest.mark.parametrize("cls", [TabMLPEncoder, FTTransformerEncoder])
def test_tabular_encoders_pass_the_conformance_kit(cls):
    kwargs = {"schema": SCHEMA, "dropout": 0.0}
    kwargs.update({"dim": 16, "heads": 2, "depth": 1} if cls is FTTransformerEncoder else {"hidden": 16})
    check_encoder(cls, kwargs=kwargs, batch_size=4)


@pytest.mark.parametrize("encoder", ["tab_mlp(hidden=16,dropout=0.0)", "ft_transformer(dim=16,heads=2,depth=1)"])
def test_fit_saves_the_schema_and_reloads_exactly(encoder, tmp_path):
    model = mmzoo.create(f"{encoder}+{TEXT}/concat", num_classes=3)
    before = model.name
    rows = _rows()
    assert model.processor.fit({"tabular": rows, "text": ["x"] * len(rows)}) == ["tabular"]
    assert model.name == before                        # the columns are not part of the name
    n_params = sum(p.numel() for p in model.encoders["tabular"].parameters())
    assert n_params > 0
    model.eval()
    probe = {"tabular": [{"age": 33, "dept": "new"}, {"score": 2.0}], "text": ["love it", ""]}
    expected = model(**model.processor(**probe))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["encoders"]["tabular"]["reload_kwargs"]["schema"] == SCHEMA
    loaded = mmzoo.load(tmp_path)
    assert torch.equal(loaded(**loaded.processor(**probe)), expected)
    # a second fit keeps a fitted processor (and the trained weights) unless forced
    assert loaded.processor.fit({"tabular": rows[:3]}) == []


def test_all_missing_row_is_a_missing_input():
    model = mmzoo.create(f"ft_transformer(dim=16,heads=2,depth=1)+{TEXT}/concat", num_classes=2)
    model.processor.fit({"tabular": _rows()})
    batch = model.processor(tabular=[{}, {"age": 40}], text=["only text", "both"])
    _, present = model.encoders["tabular"].prepare_input(batch["tabular"], "tabular")
    assert present.tolist() == [False, True]
    assert model(**batch).shape == (2, 2)


TOKEN_FUSIONS = ["cross_attn(dim=16,heads=2)", "perceiver(dim=16,heads=2)", "attention(dim=16,heads=2)"]


@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_ft_transformer_column_tokens_feed_every_token_fusion(fusion):
    torch.manual_seed(0)
    model = mmzoo.create(f"ft_transformer(dim=16,heads=2,depth=1,dropout=0.0)+{TEXT}/{fusion}", num_classes=3)
    rows = _rows()
    model.processor.fit({"tabular": rows})
    batch = model.processor(tabular=rows[:4], text=["a", "bb", "ccc", "dd"])
    feats, _ = model.encode(**batch)
    assert feats["tabular"].tokens.shape == (4, 4, 16)         # one token per column (CLS is the pooled output)
    logits = model(**batch)
    logits.sum().backward()
    grad = model.encoders["tabular"].columns.embed.weight.grad
    assert grad is not None and grad.abs().sum() > 0              # the fusion attends over the column tokens
    # changing one column's value changes the output through its token
    changed = model.processor(tabular=[{**rows[0], "dept": "tops" if rows[0]["dept"] != "tops" else "dresses"}]
                              + rows[1:4], text=["a", "bb", "ccc", "dd"])
    model.eval()
    assert not torch.allclose(model(**changed)[0], model(**batch)[0])


def test_fit_trains_a_tabular_model_and_uses_the_columns():
    from mmzoo.tasks import Split
    from mmzoo.train import evaluate, fit

    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(240):
        size = ["S", "M", "L"][i % 3]
        x = float(rng.normal())
        rows.append({"x": x if i % 7 else None, "size": size})
        labels.append(int(size == "L" or (x > 0.5 and i % 7 != 0)))
    split = lambda a, b: Split({"tabular": rows[a:b]}, torch.tensor(labels[a:b]))  # noqa: E731
    model = mmzoo.create("tab_mlp(hidden=32,dropout=0.0)/concat", num_classes=2)
    fit(model, split(0, 180), split(180, 240), epochs=30, batch_size=32, lr=0.01, patience=0, progress=False)
    assert model.encoders["tabular"].schema == {"numeric": ["x"], "categorical": [["size", 3]]}
    assert evaluate(model, split(180, 240))["accuracy"] > 0.85


def _saved_table_model(tmp_path):
    torch.manual_seed(0)
    model = mmzoo.create(f"tab_mlp(hidden=16,dropout=0.0)+{TEXT}/concat", num_classes=3, labels=["a", "b", "c"])
    rows = _rows()
    model.processor.fit({"tabular": rows, "text": ["love it", "too small"] * 12})
    model.save_pretrained(tmp_path / "run")
    return mmzoo.load(tmp_path / "run")


def test_predict_reads_a_table_from_its_own_columns(tmp_path, caplog, capsys):
    import csv
    import logging

    from mmzoo.cli import main

    model = _saved_table_model(tmp_path)
    lines = [["age", "score", "dept", "size", "text"],
             ["33", "2", "tops", "S", "love it"],
             ["", "", "", "", "only text"],      # every cell empty: the table is missing, the text is not
             ["41", "", "new dept", "", ""],      # an unseen category, an empty text
             ["", "", "", "", ""]]                # nothing at all: an empty prediction
    with open(tmp_path / "new.csv", "w", newline="") as f:
        csv.writer(f).writerows(lines)
    assert main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "new.csv"),
                 "--out", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    written = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["label"] for r in written][3] == "" and all(r["label"] for r in written[:3])
    expected = []
    for row, present in [({"age": 33.0, "score": 2.0, "dept": "tops", "size": "S"}, "both"),
                         (None, "text"), ({"age": 41.0, "dept": "new dept"}, "tabular")]:
        text = {"both": "love it", "text": "only text", "tabular": ""}[present]
        batch = model.processor(tabular=[row or {}], text=[text])
        expected.append(model(**batch, present={"tabular": torch.tensor([row is not None])}).softmax(-1)[0])
    got = torch.tensor([[float(r[f"prob_{c}"]) for c in "abc"] for r in written[:3]])
    torch.testing.assert_close(got, torch.stack(expected).detach(), atol=1e-5, rtol=1e-4)
    # a file without the text column: predicted from the table alone, and said so
    with open(tmp_path / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows([row[:4] for row in lines[:2]])
    with caplog.at_level(logging.WARNING, logger="mmzoo.predict"):
        assert main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "table.csv"),
                     "--out", str(tmp_path / "t.csv"), "--no-progress"]) == 0
    assert "has no column for input(s) ['text']" in caplog.text
    alone = model(**model.processor(tabular=[{"age": 33.0, "score": 2.0, "dept": "tops", "size": "S"}])).softmax(-1)
    only = next(csv.DictReader(open(tmp_path / "t.csv")))
    assert [float(only[f"prob_{c}"]) for c in "abc"] == pytest.approx(alone[0].tolist(), abs=1e-5)
    # neither the input nor its columns: the error names both
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "b.csv")]) == 2
    assert "the model reads 'tabular' (or its columns ['age', 'score', 'dept', 'size']), 'text'" \
        in capsys.readouterr().err


def test_scoring_with_an_input_dropped_gives_samples_left_with_nothing_no_prediction():
    from mmzoo.bench.results import decode_classes, encode_classes
    from mmzoo.tasks import Split
    from mmzoo.train import evaluate, logit_scores, predict, predicted_classes

    torch.manual_seed(0)
    model = mmzoo.create(f"tab_mlp(hidden=16,dropout=0.0)+{TEXT}/concat", num_classes=3)
    rows = _rows(8)
    rows[2] = rows[5] = {}                                  # blank table rows: only their text is left
    model.processor.fit({"tabular": rows, "text": ["a b"] * 8})
    texts = ["love it", "too small", "ok", "fine", "nice", "bad", "great", "meh"]
    split = Split({"tabular": rows, "text": texts}, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    logits = predict(model, split, drop=("text",))          # on CPU the model itself refuses such samples
    assert torch.isnan(logits[[2, 5]]).all() and torch.isfinite(logits[[0, 1, 3, 4, 6, 7]]).all()
    full = predict(model, split, drop=("tabular",))
    kept = [0, 1, 3, 4, 6, 7]
    with_table = model.eval()(**model.processor(tabular=[rows[i] for i in kept]))
    torch.testing.assert_close(logits[kept], with_table.detach())
    classes = predicted_classes(logits)
    assert classes[[2, 5]].tolist() == [-1, -1] and torch.equal(classes[kept], logits[kept].argmax(1))
    # scored as wrong, left out of the loss
    scores = evaluate(model, split, drop=("text",))
    right = (classes == split.labels).float().sum() / 8
    assert scores["accuracy"] == pytest.approx(float(right))
    assert logit_scores(logits, split.labels, 3)["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits[kept], split.labels[kept])))
    # a sample that still has an input is scored as usual; a bench row records "no prediction" as '-'
    assert torch.isfinite(full).all()
    assert decode_classes(encode_classes(classes.tolist(), 3)) == classes.tolist()
    assert "-" in encode_classes(classes.tolist(), 3)
