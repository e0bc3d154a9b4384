"""The fastText-style ``ngram_bag`` text encoder and its hashing processor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import pytest
import torch

import mmzoo
from mmzoo.builtin.ngram_processor import NgramProcessor
from mmzoo.errors import InputError, WeightsError
from mmzoo.testing import check_encoder

SMALL = "ngram_bag(buckets=997,dim=8)"
IMAGE = "cnn(channels=(4,),in_chans=1,img_size=8)"


def _crc(kind: bytes, feature: str, buckets: int) -> int:
    return 1 + zlib.crc32(kind + feature.encode()) % buckets


def test_ids_are_the_documented_crc32_features_in_word_order():
    p = NgramProcessor(word_ngrams=2, char_ngrams=(2, 3), buckets=1000)
    expected = [_crc(b"\x01", "ab", 1000)]
    expected += [_crc(b"\x03", g, 1000) for g in ("<a", "ab", "b>", "<ab", "ab>")]
    expected += [_crc(b"\x01", "!", 1000), _crc(b"\x02", "ab\x00!", 1000)]
    expected += [_crc(b"\x03", g, 1000) for g in ("<!", "!>", "<!>")]
    assert p.words("  ＡB!") == ["ab", "!"]                                # NFKC, lower case, punctuation apart
    assert p.ids("  ＡB!") == expected
    words_only = NgramProcessor(word_ngrams=3, char_ngrams=None, buckets=50)
    assert words_only.ids("a b c") == [_crc(b"\x01", "a", 50), _crc(b"\x01", "b", 50),
                                       _crc(b"\x02", "a\x00b", 50), _crc(b"\x01", "c", 50),
                                       _crc(b"\x02", "b\x00c", 50), _crc(b"\x02", "a\x00b\x00c", 50)]
    assert NgramProcessor(word_ngrams=0, char_ngrams=(1, 1), buckets=50).ids("hi") == \
        [_crc(b"\x03", g, 50) for g in "<hi>"]
    truncated = NgramProcessor(max_length=4, buckets=1000, char_ngrams=(2, 3))
    assert truncated.ids("ab cd") == p.ids("ab cd")[:4]                    # the start of the text is kept
    batch = p(["ab", "", "   ", "ab cd"])
    assert batch["input_ids"].shape == (4, len(p.ids("ab cd")))
    assert batch["attention_mask"].sum(1).tolist() == [6, 0, 0, len(p.ids("ab cd"))]
    assert torch.equal(batch["attention_mask"], batch["input_ids"] != 0)
    assert int(batch["input_ids"].max()) <= 1000


def test_hashing_is_the_same_in_another_process_with_another_hash_seed():
    code = ("import json; from mmzoo.builtin.ngram_processor import NgramProcessor; "
            "print(json.dumps(NgramProcessor(buckets=2**18).ids('Great dress, runs small!')))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    here = NgramProcessor(buckets=2**18).ids("Great dress, runs small!")
    assert json.loads(runs[0]) == json.loads(runs[1]) == here


@pytest.mark.parametrize("kwargs", [
    {}, {"word_ngrams": 1, "char_ngrams": None}, {"word_ngrams": 0, "char_ngrams": (3, 5)},
    {"dropout": 0.2},
])
def test_ngram_bag_passes_the_conformance_kit(kwargs):
    from mmzoo.names import format_part

    check_encoder(format_part("ngram_bag", {"buckets": 997, "dim": 8, **kwargs}))


def test_pooled_is_the_masked_mean_and_an_empty_text_is_missing():
    torch.manual_seed(0)
    model = mmzoo.create(f"{IMAGE}+{SMALL}/concat", num_classes=3).eval()
    encoder, processor = model.encoders["text"], model.processor["text"]
    batch = processor(["love it", "", "ok"])
    out = encoder(encoder.prepare_input(batch, "text")[0])
    rows = encoder.embed.weight[torch.tensor(processor.ids("love it"))]
    torch.testing.assert_close(out.pooled[0], rows.mean(0))
    assert torch.equal(out.pooled[1], torch.zeros(8))
    image = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        with_empty = model(image=image, **model.processor(text=["", "  ", "ok"]))
        without = model(image=image[:2])
    torch.testing.assert_close(with_empty[:2], without)                    # "" counts as a missing text
    single = mmzoo.create(f"{SMALL}/concat", num_classes=3)
    with pytest.raises(InputError, match="no input present"):
        single(**single.processor(text=["hi", ""]))


@pytest.mark.parametrize("fusion", ["cross_attn(dim=16,heads=2)", "perceiver", "attention(dim=16,heads=2)"])
def test_token_fusions_attend_over_ngrams(fusion):
    torch.manual_seed(0)
    model = mmzoo.create(f"{IMAGE}+{SMALL}/{fusion}", num_classes=3)
    logits = model(image=torch.rand(3, 1, 8, 8), **model.processor(text=["a b c", "", "hello"]))
    assert logits.shape == (3, 3) and bool(torch.isfinite(logits).all())
    logits.sum().backward()
    assert model.encoders["text"].embed.weight.grad.abs().sum() > 0


def test_save_load_round_trip_and_foreign_processor_files(tmp_path):
    torch.manual_seed(0)
    model = mmzoo.create(f"{SMALL}/concat", num_classes=4).eval()
    texts = ["runs small", "Perfect fit!", "x"]
    expected = model(**model.processor(text=texts))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "processor" / "text" / "ngram.json").read_text()) == {
        "buckets": 997, "char_ngrams": [2, 5], "hash": "crc32-v1", "max_length": 1024, "word_ngrams": 2}
    loaded = mmzoo.load(tmp_path / "m")
    assert loaded.name == model.name
    assert torch.equal(loaded(**loaded.processor(text=texts)), expected)
    other = mmzoo.create("ngram_bag(buckets=998,dim=8)/concat", num_classes=4)
    with pytest.raises(WeightsError, match="records n-gram settings.*belongs to another model"):
        other.processor["text"].load(tmp_path / "m" / "processor" / "text")
    with pytest.raises(WeightsError, match="ngram.json is missing"):
        other.processor["text"].load(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"char_ngrams": (3, 2)}, "char_ngrams must be None or \\(min, max\\)"),
    ({"buckets": 0}, "buckets must be an int"),
    ({"word_ngrams": 0, "char_ngrams": None}, "leave no feature"),
    ({"word_ngrams": -1}, "word_ngrams must be an int >= 0"),
    ({"dim": 0}, "dim must be an int >= 1"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        mmzoo.create(f"ngram_bag({','.join(f'{k}={v!r}' for k, v in kwargs.items())})/concat", num_classes=2)


def test_ids_out_of_range_and_non_strings_are_refused():
    model = mmzoo.create(f"{SMALL}/concat", num_classes=2)
    with pytest.raises(InputError, match=r"n-gram ids must be in \[0, 998\)"):
        model(text={"input_ids": torch.tensor([[5, 998]]), "attention_mask": torch.tensor([[True, True]])})
    with pytest.raises(InputError, match="text items \\[1\\] are not strings"):
        model.processor(text=["ok", 3])


def test_ngram_bag_learns_a_text_task():
    from mmzoo.train import evaluate, fit

    splits = mmzoo.get_task("digits-pair", seed=0, limit=300).splits()
    torch.manual_seed(0)
    model = mmzoo.create("ngram_bag(buckets=4096,dim=16)/concat", num_classes=10)
    fit(model, splits["train"], splits["val"], epochs=20, batch_size=32, lr=0.03, progress=False)
    assert evaluate(model, splits["test"])["accuracy"] > 0.9               # chance is 0.1
