"""fit computes a frozen encoder's outputs once per run when its input is fixed."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import mmzoo
from mmzoo.tasks import Split
from mmzoo.train import fit


def _split(n: int, seed: int, raw: bool = False) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 3, 16, 16, generator=g) * 0.5 + labels[:, None, None, None] * 0.4
    texts = [["a red cat", "the blue dog sat"][int(y)] + " x" * (i % 3) for i, y in enumerate(labels)]
    if raw:  # uint8 arrays: loaded one sample at a time through the image processor
        images = [np.asarray((im.permute(1, 2, 0) * 255).to(torch.uint8)) for im in images]
    return Split({"image": images, "text": texts}, labels)


def _counting(module) -> list[int]:
    """Samples seen by ``module``'s forward, appended per call."""
    seen: list[int] = []
    module.register_forward_hook(lambda mod, args, out: seen.append(len(args[0])))
    return seen


def _run(name: str, cache_bytes: int, monkeypatch, *, epochs: int = 3, **fit_kwargs):
    from mmzoo.train import _frozen

    monkeypatch.setattr(_frozen, "FROZEN_CACHE_BYTES", cache_bytes)
    torch.manual_seed(0)
    model = mmzoo.create(name, num_classes=2)
    seen = _counting(model.encoders["image"].body)
    result = fit(model, _split(20, 1, fit_kwargs.pop("raw", False)), _split(8, 2), epochs=epochs, batch_size=6,
                 lr=3e-3, progress=False, patience=None, seed=0, **fit_kwargs)
    seen_in_fit = list(seen)
    logits = model.eval()(**model.processor(**_split(8, 3).inputs))
    return model, result, seen_in_fit, logits


@pytest.mark.parametrize("fusion", ["concat", "attention(dim=16,heads=2)"])
def test_cached_run_matches_the_uncached_one_and_runs_the_encoder_once_per_sample(fusion, monkeypatch, caplog):
    name = f"cnn(channels=(4,8),img_size=16,freeze=True)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/{fusion}"
    with caplog.at_level(logging.INFO, logger="mmzoo.train"):
        cached_model, cached, seen_cached, logits_cached = _run(name, 2**30, monkeypatch)
    assert "caching the frozen image encoder's outputs: 28 samples" in caplog.text
    assert cached.data["frozen_cache"] == ["image"]
    # once per sample of train (20) and val (8)
    assert sum(seen_cached) == 20 + 8
    plain_model, plain, seen_plain, logits_plain = _run(name, 0, monkeypatch)
    assert "frozen_cache" not in plain.data
    assert sum(seen_plain) >= 3 * 20 + 3 * 8  # without the cache: every epoch, train and val
    # turned off by the setting, with room to spare: the same as no room, without the one batch
    # (all 20 training samples) that the size estimate ran before giving up
    _, off, seen_off, logits_off = _run(name, 2**30, monkeypatch, frozen_cache=False)
    assert "frozen_cache" not in off.data and seen_off == seen_plain[1:] and seen_plain[0] == 20
    torch.testing.assert_close(logits_off, logits_plain)
    losses = [r["train_loss"] for r in cached.history]
    assert losses == pytest.approx([r["train_loss"] for r in plain.history], rel=1e-5, abs=1e-6)
    assert [r["val_accuracy"] for r in cached.history] == [r["val_accuracy"] for r in plain.history]
    torch.testing.assert_close(logits_cached, logits_plain, rtol=1e-4, atol=1e-5)
    # the model is the same model afterwards: same keys, plain encoder methods, frozen weights untouched
    assert cached_model.state_dict().keys() == plain_model.state_dict().keys()
    assert "forward" not in vars(cached_model.encoders["image"])
    for key, value in cached_model.encoders["image"].state_dict().items():
        assert torch.equal(value, plain_model.encoders["image"].state_dict()[key]), key


def test_tokens_are_cached_only_when_the_fusion_reads_them(monkeypatch, caplog):
    # pooled only: 28 samples x (8 floats + a presence flag) = 924 bytes; the attention fusion
    # reads the 4x4 grid of 8-wide tokens too (16x more), over a 2,000-byte bound
    cached = {}
    for fusion in ("concat", "attention(dim=16,heads=2)"):
        name = f"cnn(channels=(4,8),img_size=16,freeze=True)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/{fusion}"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mmzoo.train"):
            cached[fusion] = _run(name, 2000, monkeypatch, epochs=1)[1].data.get("frozen_cache")
        if fusion != "concat":
            assert "28 samples would take ~0.0 MB, over the 0 MB bound" in caplog.text
    assert cached == {"concat": ["image"], "attention(dim=16,heads=2)": None}


def test_over_the_bound_or_augmented_falls_back_with_a_log_line(monkeypatch, caplog):
    name = "cnn(channels=(4,8),img_size=16,freeze=True)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/concat"
    with caplog.at_level(logging.INFO, logger="mmzoo.train"):
        _, result, seen, _ = _run(name, 100, monkeypatch, epochs=2)
    assert "over the 0 MB bound" in caplog.text and "frozen_cache" not in result.data
    assert sum(seen) >= 2 * 28
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmzoo.train"):
        _, result, seen, _ = _run(name, 2**30, monkeypatch, epochs=2, raw=True, augment=True)
    assert "is augmented" in caplog.text and "frozen_cache" not in result.data
    assert sum(seen) >= 2 * 28


def test_raw_images_loaded_per_sample_are_cached_without_augmentation(monkeypatch, caplog):
    name = "cnn(channels=(4,8),img_size=16,freeze=True)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/concat"
    with caplog.at_level(logging.INFO, logger="mmzoo.train"):
        _, cached, seen_cached, logits_cached = _run(name, 2**30, monkeypatch, raw=True, cache="none",
                                                     augment=False)
    assert cached.data["cache"] == "none" and cached.data["frozen_cache"] == ["image"]
    assert sum(seen_cached) == 20 + 8
    _, plain, _, logits_plain = _run(name, 0, monkeypatch, raw=True, cache="none", augment=False)
    assert [r["train_loss"] for r in cached.history] == pytest.approx(
        [r["train_loss"] for r in plain.history], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(logits_cached, logits_plain, rtol=1e-4, atol=1e-5)


def test_a_frozen_text_encoder_with_word_dropout_is_not_cached(monkeypatch, caplog):
    from mmzoo.train import _frozen

    monkeypatch.setattr(_frozen, "FROZEN_CACHE_BYTES", 2**30)
    model = mmzoo.create("cnn(channels=(4,8),img_size=16)+lstm(vocab_size=300,embed_dim=8,hidden_size=8,"
                         "freeze=True)/concat", num_classes=2)
    with caplog.at_level(logging.INFO, logger="mmzoo.train"):
        fit(model, _split(12, 1, raw=True), epochs=1, batch_size=6, progress=False, cache="none",
            augment=False, word_dropout=0.3)
    assert "not caching the frozen text encoder's outputs" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmzoo.train"):
        result = fit(model, _split(12, 1, raw=True), epochs=1, batch_size=6, progress=False, cache="none",
                     augment=False)
    assert result.data["frozen_cache"] == ["text"]


# ---------------------------------------------------------------- PreparedInputs: scoring one split many times
FROZEN_IMAGE = "cnn(channels=(4,8),img_size=16,freeze=True)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/concat"


def test_robustness_runs_a_frozen_encoder_once_over_inputs_it_leaves_untouched():
    from mmzoo.robustness import model_predictor, robustness_report
    from mmzoo.train import predict

    torch.manual_seed(0)
    model = mmzoo.create(FROZEN_IMAGE, num_classes=2).eval()
    seen = _counting(model.encoders["image"].body)
    split, modalities = _split(12, 4), {"image": "image", "text": "text"}

    plain = robustness_report(lambda s: predict(model, s).argmax(1).tolist(), split, modalities)
    seen_plain, seen[:] = sum(seen), []
    reused = robustness_report(model_predictor(model), split, modalities)

    assert reused == plain
    # clean + 2 image corruptions x 4 levels + 2 text corruptions x 4 levels + 2 mismatched
    assert seen_plain == 19 * 12
    # once on entry, again only where the image itself changes: its 8 corruptions and its shuffle
    assert sum(seen) == 12 + 8 * 12 + 12
    assert not any(name in vars(model.encoders["image"]) for name in ("forward", "prepare_input", "batch_size"))


def test_prepared_inputs_serve_only_the_inputs_shared_with_their_split():
    from mmzoo.train import PreparedInputs, evaluate, predict

    torch.manual_seed(0)
    model = mmzoo.create(FROZEN_IMAGE, num_classes=2).eval()
    seen = _counting(model.encoders["image"].body)
    split = _split(10, 5)
    other_images = Split({"image": split.inputs["image"].flip(-1), "text": split.inputs["text"]}, split.labels)
    expected = {"same": predict(model, split), "other": predict(model, other_images),
                "no text": evaluate(model, split, drop=("text",))}
    seen[:] = []
    with PreparedInputs(model, split) as prepared:
        assert list(prepared.tables) == ["image"] and sum(seen) == 10
        assert torch.equal(predict(model, split, prepared=prepared), expected["same"])
        assert sum(seen) == 10  # served
        assert torch.equal(predict(model, other_images, prepared=prepared), expected["other"])
        assert sum(seen) == 20  # a different image input is encoded again
        assert evaluate(model, split, drop=("text",), prepared=prepared) == expected["no text"]
        assert sum(seen) == 20
        with pytest.raises(mmzoo.errors.InputError, match="batches of 256.*hold 4"):
            predict(model, split, batch_size=4, prepared=prepared)
    assert prepared.tables == {} and torch.equal(predict(model, split), expected["same"])

    # blocks nest: leaving an inner one leaves the outer one serving
    with PreparedInputs(model, split) as outer:
        with PreparedInputs(model, other_images):
            pass
        seen[:] = []
        assert torch.equal(predict(model, split, prepared=outer), expected["same"]) and seen == []
    assert "forward" not in vars(model.encoders["image"])


def test_prepared_inputs_of_a_model_without_frozen_encoders_reuse_processing_only(monkeypatch):
    from mmzoo.processing import ImageProcessor
    from mmzoo.robustness import model_predictor, robustness_report
    from mmzoo.train import PreparedInputs, predict

    torch.manual_seed(0)
    model = mmzoo.create("cnn(channels=(4,8),img_size=16)+lstm(vocab_size=300,embed_dim=8,hidden_size=8)/concat",
                         num_classes=2).eval()
    split = _split(6, 6, raw=True)  # uint8 arrays: every image goes through the timm transform
    processed: list[int] = []  # one per image; make_loader also processes 4 first to size the memory cache
    preprocess = ImageProcessor.preprocess
    monkeypatch.setattr(ImageProcessor, "preprocess",
                        lambda self, *args, **kwargs: processed.append(1) or preprocess(self, *args, **kwargs))
    expected = predict(model, split)
    processed[:] = []
    with PreparedInputs(model, split) as prepared:
        assert prepared.tables == {} and sorted(prepared.tensors) == ["image", "text"]
        assert len(processed) == 4 + 6
        assert torch.equal(predict(model, split, prepared=prepared), expected)
        texts = Split({"image": split.inputs["image"], "text": [t.upper() for t in split.inputs["text"]]},
                      split.labels)
        assert torch.equal(predict(model, texts, prepared=prepared), predict(model, texts))
    assert len(processed) == 2 * (4 + 6)  # only the unprepared predict(model, texts) processed them again

    modalities = {"image": "image", "text": "text"}
    processed[:] = []
    plain = robustness_report(lambda s: predict(model, s).argmax(1).tolist(), split, modalities)
    processed_plain, processed[:] = len(processed), []
    assert robustness_report(model_predictor(model), split, modalities) == plain
    # clean + 8 image corruptions + 8 text corruptions + 2 mismatched, 6 images each, versus:
    # once on entry, then where the image itself changes (its 8 corruptions and its shuffle)
    assert (processed_plain, len(processed)) == (19 * (4 + 6), (1 + 8 + 1) * (4 + 6))


def test_a_split_takes_a_mapping_of_tensors_and_checks_each_length():
    ids = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.bool)}
    assert len(Split({"text": ids}, torch.zeros(4))) == 4
    with pytest.raises(mmzoo.errors.InputError, match=r"split input 'text' \('attention_mask'\) has 2 samples"):
        Split({"text": {**ids, "attention_mask": ids["attention_mask"][:2]}}, torch.zeros(4))
