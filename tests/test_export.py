"""``mmzoo predict`` / ``embed`` / ``export`` and ``model.predict``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import mmzoo
from mmzoo.cli import main
from mmzoo.errors import InputError, MMZooError

LABELS = ["cat", "dog", "fox"]


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = mmzoo.create("cnn+lstm(vocab_size=300)/concat", num_classes=3, labels=LABELS)
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _images(tmp_path, n: int) -> list[str]:
    from PIL import Image

    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((np.random.default_rng(i).random((20, 20, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_predict_csv_with_empty_cells_writes_one_row_per_input_row(saved, tmp_path):
    images = _images(tmp_path, 5)
    rows = [("r0", images[0], "a cat"), ("r1", "", "a dog"), ("r2", images[2], ""), ("r3", "", ""),
            ("r4", images[4], "a fox"), ("r5", images[1], "the dog")]
    data = tmp_path / "new.csv"
    with data.open("w", newline="") as handle:
        csv.writer(handle).writerows([("id", "image", "text"), *rows])
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(saved), "--data", str(data), "--out", str(out), "--batch-size", "4",
                 "--no-progress"]) == 0
    written = list(csv.DictReader(out.open()))
    assert [r["id"] for r in written] == [r[0] for r in rows]
    assert list(written[0]) == ["id", "label", "prob_cat", "prob_dog", "prob_fox"]
    assert written[3]["label"] == "" and written[3]["prob_cat"] == ""  # no input at all
    model = mmzoo.load(saved)
    for row, (_, image, text) in zip(written, rows):
        if not (image or text):
            continue
        probs = [float(row[f"prob_{name}"]) for name in LABELS]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == LABELS[int(np.argmax(probs))]
        # the same as the model run on that row alone, with the empty cell as a missing input
        batch = {k: [v] for k, v in (("image", image), ("text", text)) if v}
        labels, expected = model.predict(batch)
        assert labels == [row["label"]]
        assert probs == pytest.approx(expected[0].tolist(), abs=1e-5)


def test_predict_jsonl_and_errors(saved, tmp_path):
    data = tmp_path / "new.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [{"text": "a cat"}, {"text": None, "image": None},
                                                      {"text": "a dog"}]) + "\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(saved), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    written = list(csv.DictReader(out.open()))
    assert [r["id"] for r in written] == ["0", "1", "2"] and written[1]["label"] == ""
    bad = tmp_path / "bad.csv"
    bad.write_text("photo,caption\nx,y\n")
    with pytest.raises(InputError, match=r"columns \['caption', 'photo'\].*'image', 'text'"):
        from mmzoo.predict import predict_file

        predict_file(mmzoo.load(saved), bad, tmp_path / "o.csv", progress=False)


def test_predict_reads_rows_as_the_csv_task_does(tmp_path):
    # quoted newlines and U+2028 stay in their field (no splitlines), a BOM is dropped,
    # deeply nested JSON is an InputError naming the line
    from mmzoo.predict import read_rows

    path = tmp_path / "rows.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([["text", "image"], ["two\nlines\u2028here", ""], ["plain", ""]])
    assert read_rows(path) == [{"text": "two\nlines\u2028here", "image": None}, {"text": "plain", "image": None}]
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "ok"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"deep.jsonl:2: the JSON is nested too deeply"):
        read_rows(deep)


def test_embed_writes_fused_embeddings(saved, tmp_path):
    data = tmp_path / "new.csv"
    data.write_text("text\na cat\n\na fox\n")  # csv skips the blank line: 2 rows
    out = tmp_path / "e.npy"
    assert main(["embed", str(saved), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    embeddings = np.load(out)
    model = mmzoo.load(saved)
    assert embeddings.shape == (2, model.num_features)
    with torch.no_grad():
        expected = model.forward_features(**model.processor(text=["a cat", "a fox"]))
    assert np.allclose(embeddings, expected.numpy(), atol=1e-5)


def test_model_predict_returns_labels_and_probabilities():
    model = mmzoo.create("cnn+lstm(vocab_size=300)/concat", num_classes=3, labels=LABELS)
    batch = model.processor(image=[np.zeros((8, 8, 3), np.uint8)] * 2, text=["a", "b"])
    labels, probabilities = model.predict(batch)
    assert probabilities.shape == (2, 3) and torch.allclose(probabilities.sum(1), torch.ones(2))
    assert labels == [LABELS[i] for i in probabilities.argmax(1).tolist()]
    assert model.training  # left as it was


@pytest.mark.parametrize("name", [
    "cnn+lstm(vocab_size=300)/concat",
    "test_resnet+transformer(vocab_size=300,dim=32,depth=1,heads=2)/attention",
])
def test_export_matches_onnxruntime(name, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    model = mmzoo.create(name, num_classes=3, labels=LABELS)
    model.save_pretrained(tmp_path / "model")
    path = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "model"), "--onnx", str(path)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    record = json.loads((tmp_path / "model.onnx.json").read_text())
    assert record["inputs"] == ["image", "text_input_ids", "text_attention_mask", "present_image", "present_text"]

    # our own check: another batch size and text length than the export's, padding and a missing image
    loaded = mmzoo.load(tmp_path / "model")
    size = loaded.processor["image"].data_config["input_size"]
    image = torch.rand(4, *size)
    ids = torch.randint(1, 300, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 3:] = False
    ids[1, 3:] = 0
    present_image = torch.tensor([True, False, True, True])
    with torch.no_grad():
        expected = loaded(image=image, text={"input_ids": ids, "attention_mask": mask},
                          present={"image": present_image}).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == record["inputs"]
    got = session.run(["logits"], {"image": image.numpy(), "text_input_ids": ids.numpy(),
                                   "text_attention_mask": mask.numpy(), "present_image": present_image.numpy(),
                                   "present_text": np.ones(4, bool)})[0]
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", [
    "tab_mlp(hidden=16)+lstm(vocab_size=300)/concat",
    "ft_transformer(dim=16,heads=2,depth=1)+lstm(vocab_size=300)/cross_attn(dim=16,heads=2)",
])
def test_export_of_a_table_model_matches_onnxruntime(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(2)
    model = mmzoo.create(name, num_classes=3, labels=LABELS)
    rows = [{"age": 20 + i, "votes": float(i % 4) if i % 5 else None, "dept": ["tops", "dresses"][i % 2]}
            for i in range(12)]
    model.processor.fit({"tabular": rows, "text": ["a red dress", "blue top"] * 6})
    model.save_pretrained(tmp_path / "model")
    path = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "model"), "--onnx", str(path)]) == 0
    record = json.loads((tmp_path / "model.onnx.json").read_text())
    table = ["tabular_numeric", "tabular_numeric_missing", "tabular_categorical"]
    assert record["inputs"] == [*table, "text_input_ids", "text_attention_mask", "present_tabular", "present_text"]
    assert all(record["dynamic_axes"][k] == {"0": "batch"} for k in table)   # the columns are fixed

    # another batch size: missing cells, an unseen category, a row with no cell at all, an empty text
    loaded = mmzoo.load(tmp_path / "model")
    batch = loaded.processor(tabular=[{"age": 33, "dept": "coats"}, {}, {"votes": 2.0, "dept": "tops"}, rows[3],
                                      {"age": 61}],
                             text=["a red dress", "blue top", "", "red", "top"])
    with torch.no_grad():
        expected = loaded(**batch).numpy()
    present = {"tabular": loaded.encoders["tabular"].prepare_input(batch["tabular"], "tabular")[1],
               "text": batch["text"]["attention_mask"].any(1)}
    feed = {f"tabular_{k}": v.numpy() for k, v in batch["tabular"].items()}
    feed.update({f"text_{k}": v.numpy() for k, v in batch["text"].items()})
    feed.update({f"present_{k}": v.numpy() for k, v in present.items()})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {i.name: feed[i.name] for i in session.get_inputs()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_export_names_the_component_that_cannot_be_exported(tmp_path):
    pytest.importorskip("onnxruntime")
    from mmzoo.components import Encoder, EncoderOutput

    class Spectral(Encoder):
        """Singular values: no ONNX operator for them."""

        modality = "image"

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.num_features = 3

        def forward(self, x):
            return EncoderOutput(torch.linalg.svdvals(x.flatten(2)) * self.scale)  # (B, 3)

        def build_processor(self):
            from mmzoo.processing import ImageProcessor

            return ImageProcessor({"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3})

    class Plugin:
        @staticmethod
        @mmzoo.hookimpl
        def mmzoo_register(registry):
            registry.add_encoder("spectral", Spectral, modality="image")

    from mmzoo.testing import isolated_registry

    registry = isolated_registry(("spectral-plugin", Plugin()))
    model = mmzoo.create("spectral+lstm(vocab_size=300)/concat", num_classes=2, registry=registry)
    assert model.eval()(image=torch.rand(2, 3, 8, 8), text=torch.randint(1, 300, (2, 5))).shape == (2, 2)
    from mmzoo.export import export_onnx

    with pytest.raises(MMZooError, match=r"its encoder .image. \(Spectral\) cannot be exported \(.*svd"):
        export_onnx(model, tmp_path / "m.onnx")
