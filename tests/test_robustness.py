"""Corruption curves and mismatched pairs (mmzoo.robustness) on classifiers
whose behaviour is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmzoo.errors import InputError
from mmzoo.robustness import (CORRUPTIONS, corrupt, corruption_curves, mismatched_accuracy, model_predictor,
                              relative_auc, robustness_report)
from mmzoo.tasks import Split


def _text_only(split):
    """Reads the label off the last word of the text; never looks at the image."""
    return [int(t.split()[-1]) if t.split() and t.split()[-1].isdigit() else -1 for t in split.inputs["text"]]


def _paired_split(n=40):
    rng = np.random.default_rng(0)
    labels = list(range(n))  # every label distinct: a shuffled partner is always wrong
    images = [rng.random((8, 8)).astype(np.float32) for _ in range(n)]
    texts = [f"the number {y}" for y in labels]
    return Split({"image": images, "text": texts}, torch.tensor(labels))


def test_a_model_using_one_input_loses_nothing_when_the_other_is_shuffled():
    split = _paired_split()
    scores = mismatched_accuracy(_text_only, split)
    assert scores["text"] == 1.0     # text keeps its labels, the ignored image is shuffled
    assert scores["image"] == 0.0    # the text it reads belongs to another sample
    assert mismatched_accuracy(_text_only, Split({"text": split.inputs["text"]}, split.labels)) == {}


def test_level_zero_is_the_clean_data_and_every_corruption_changes_something(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(1)
    wav = tmp_path / "a.wav"
    wavfile.write(wav, 8000, (rng.standard_normal(800) * 3000).astype(np.int16))
    data = {
        "image": [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)],
        "text": ["a red car on the road", "two blue buses", ""],
        "tabular": [{"age": 30, "dept": "Dresses"}, {"age": 41, "dept": None}, {"age": 22, "dept": "Tops"}],
        "audio": [rng.standard_normal(400).astype(np.float32), (rng.standard_normal(300), 8000), str(wav)],
    }
    for modality, names in CORRUPTIONS.items():
        for name in names:
            assert corrupt(data[modality], modality, name, 0.0) is data[modality]
            changed = corrupt(data[modality], modality, name, 1.0, seed=3)
            assert len(changed) == len(data[modality])
            assert corrupt(data[modality], modality, name, 1.0, seed=3).__repr__() == changed.__repr__()  # seeded
            assert changed.__repr__() != data[modality].__repr__(), (modality, name)
    wave, rate = corrupt(data["audio"], "audio", "additive_noise", 0.5)[2]
    assert rate == 8000 and wave.shape == (800,) and wave.dtype == np.float32
    # at level 1 one word / one filled cell survives: a corruption never makes the input missing
    dropped = corrupt(data["text"], "text", "word_dropout", 1.0)
    assert [len(t.split()) for t in dropped] == [1, 1, 0] and dropped[0] in data["text"][0].split()
    blanked = corrupt(data["tabular"] + [[None, 5, 6]], "tabular", "blank_cells", 1.0)
    assert [sum(v is not None for v in (row.values() if isinstance(row, dict) else row)) for row in blanked] == [
        1, 1, 1, 1]
    assert blanked[1] == {"age": 41, "dept": None} and isinstance(blanked[3], list)
    # at level 0 the curve's first point is the clean accuracy of the same predictor
    split = _paired_split()
    curves = corruption_curves(_text_only, split, {"image": "image", "text": "text"}, levels=(0, 0.5, 1))
    assert {name: curve[0] for name, curve in curves["text"].items()} == {"word_dropout": 1.0, "char_typos": 1.0}


def test_image_corruptions_on_a_batch_tensor_keep_its_shape_and_type():
    images = torch.rand(4, 3, 16, 16)
    for name in CORRUPTIONS["image"]:
        out = corrupt(images, "image", name, 0.5)
        assert out.shape == images.shape and out.dtype == images.dtype and not torch.equal(out, images)
    square = np.zeros((32, 32))
    square[14:18, 14:18] = 1.0
    peak = [corrupt([square], "image", "blur", level)[0].max() for level in (0.0, 0.25, 0.5, 1.0)]
    assert peak == sorted(peak, reverse=True) and peak[0] == 1.0 and peak[-1] < 0.2


def _monotone_ish(curve, tolerance=0.03):
    return all(b <= a + tolerance for a, b in zip(curve, curve[1:])) and curve[-1] < curve[0] - 0.1


def test_curves_fall_with_the_level_on_constructed_cases():
    n = 400
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, n)
    # image: which half is bright; text: keyword present; tabular: sign of x; audio: sign of a DC level
    images = [np.pad(np.full((8, 4), 0.6), ((0, 0), (4, 0) if y else (0, 4)), constant_values=0.4) for y in labels]
    texts = [" ".join(["word"] * 5 + (["yes"] if y else ["no"])) for y in labels]
    rows = [{"x": 1.0 if y else -1.0, "noise": float(rng.random())} for y in labels]
    audio = [np.full(50, 0.1 if y else -0.1, np.float32) for y in labels]
    split = Split({"image": images, "text": texts, "tabular": rows, "audio": audio}, torch.as_tensor(labels))

    def predict(s):
        out = []
        for im, text, row, wave in zip(*(s.inputs[k] for k in ("image", "text", "tabular", "audio"))):
            votes = [im[0, 7] > im[0, 0], "yes" in text.split(),
                     (row["x"] or 0) > 0, wave[0] > 0]
            out.append(votes)
        return out

    modalities = {"image": "image", "text": "text", "tabular": "tabular", "audio": "audio"}
    for slot in modalities:  # score one input at a time: the vote of that input alone
        column = list(modalities).index(slot)
        curves = corruption_curves(lambda s, c=column: [int(v[c]) for v in predict(s)], split, modalities,
                                   levels=(0, 0.25, 0.5, 0.75, 1.0))
        assert curves[slot], slot
        for name, curve in curves[slot].items():
            assert curve[0] == 1.0, (slot, name)
            if (slot, name) != ("image", "blur"):  # a blur keeps which side is brighter
                assert _monotone_ish(curve), (slot, name, curve)
        for other in set(curves) - {slot}:  # corrupting an input the predictor ignores costs nothing
            assert all(v == 1.0 for curve in curves[other].values() for v in curve)


def test_relative_auc():
    assert relative_auc([0, 0.5, 1], [0.8, 0.8, 0.8], 0.8) == pytest.approx(1.0)
    assert relative_auc([0, 0.5, 1], [0.8, 0.4, 0.0], 0.8) == pytest.approx(0.5)
    assert relative_auc([0, 1], [0.0, 0.0], 0.0) is None
    with pytest.raises(InputError, match="one accuracy per level"):
        relative_auc([0, 1], [1.0], 1.0)


def test_report_subsets_and_scores_per_input():
    split = _paired_split(60)
    report = robustness_report(_text_only, split, {"image": "image", "text": "text"}, levels=(0, 0.5, 1.0),
                               max_samples=30)
    assert report["samples"] == 30 and report["clean_accuracy"] == 1.0
    assert report["corruption_auc"]["image"] == pytest.approx(1.0)   # the ignored input
    assert report["corruption_auc"]["text"] < 0.9
    assert report["auc"]["text"]["word_dropout"] == pytest.approx(relative_auc(
        report["levels"], report["curves"]["text"]["word_dropout"], 1.0))
    assert report["mismatched_accuracy"] == {"image": 0.0, "text": 1.0}


def test_bad_requests_are_refused_with_what_to_do():
    with pytest.raises(InputError, match="no corruption 'fog' for modality 'image'"):
        corrupt([], "image", "fog", 0.5)
    with pytest.raises(InputError, match=r"level must be in \[0, 1\]"):
        corrupt([], "text", "word_dropout", 1.5)
    with pytest.raises(InputError, match="raw strings"):
        corrupt(torch.zeros(2, 5, dtype=torch.long), "text", "char_typos", 0.5)
    with pytest.raises(InputError, match="start at 0"):
        corruption_curves(_text_only, _paired_split(), {"text": "text"}, levels=(0.5, 1.0))


def test_model_predictor_scores_a_real_model_on_raw_inputs():
    import mmzoo

    model = mmzoo.create("cnn(channels=(4,),img_size=8)+lstm(hidden_size=8,embed_dim=8,vocab_size=300)/concat",
                         num_classes=3)
    split = _paired_split(6)
    split = Split(split.inputs, torch.tensor([0, 1, 2, 0, 1, 2]))
    predict = model_predictor(model)
    expected = model.eval()(**model.processor(**split.inputs)).argmax(1).tolist()
    assert predict(split) == expected
    report = robustness_report(predict, split, {"image": "image", "text": "text"}, levels=(0, 1.0))
    clean = float(np.mean(np.asarray(expected) == split.labels.numpy()))
    assert report["clean_accuracy"] == clean and set(report["mismatched_accuracy"]) == {"image", "text"}
