"""mmzoo.data: the DataLoader pipeline (memory cache, per-sample loading in
workers, streams), augmentation, alpha compositing, the hf-dataset task,
errors from worker processes, and data-parallel sharding under torchrun."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmzoo
from mmzoo.data import Collate, make_loader
from mmzoo.errors import InputError
from mmzoo.tasks import Split
from mmzoo.train import evaluate, fit

ICONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tabler-icons" / "icons" / "outline"
if not ICONS.is_dir():  # worktrees live next to main/ and shared/
    ICONS = Path("/work/shared/data/tabler-icons/icons/outline")
NAME = "cnn(channels=(4,),img_size=8)+lstm(hidden_size=8,embed_dim=8,vocab_size=300)/concat"


def _png(value: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(value)
    array = (rng.integers(0, 60, (size, size, 3)) + (150 if value % 2 else 0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_split(folder: Path, n: int) -> Split:
    """n PNG files (odd samples bright) with a text each; label = parity."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        (folder / f"{i}.png").write_bytes(_png(i))
        paths.append(str(folder / f"{i}.png"))
    texts = [f"a {'bright' if i % 2 else 'dark'} square number {i}" for i in range(n)]
    return Split(inputs={"image": paths, "text": texts}, labels=torch.tensor([i % 2 for i in range(n)]))


# ------------------------------------------------------------------ loader
def test_two_workers_give_the_same_trajectory_on_two_seeded_runs(tmp_path):
    split = _image_split(tmp_path / "img", 24)

    def run(seed):
        torch.manual_seed(0)
        model = mmzoo.create(NAME, num_classes=2)
        result = fit(model, split, split, epochs=2, batch_size=8, lr=3e-3, num_workers=2, cache="none",
                     word_dropout=0.2, seed=seed, progress=False)
        return result, model.state_dict()

    first, state = run(0)
    again, state_again = run(0)
    other, _ = run(1)
    assert first.data == {"cache": "none", "augment": True, "num_workers": 2}
    assert first.steps == 6
    losses = [h["train_loss"] for h in first.history]
    assert losses == [h["train_loss"] for h in again.history]
    for key in state:
        torch.testing.assert_close(state[key], state_again[key], rtol=0, atol=0, msg=key)
    assert losses != [h["train_loss"] for h in other.history]          # the seed is what fixes it


def test_memory_cache_is_chosen_for_small_splits_and_logged(tmp_path, caplog, monkeypatch):
    import mmzoo.data

    split = _image_split(tmp_path / "img", 12)
    model = mmzoo.create(NAME, num_classes=2)
    with caplog.at_level(logging.INFO, logger="mmzoo.data"):
        result = fit(model, split, None, epochs=1, batch_size=4, progress=False)
    assert result.data == {"cache": "memory", "augment": False, "num_workers": 0}
    assert "cache=memory" in caplog.text and "MiB" in caplog.text
    monkeypatch.setattr(mmzoo.data, "MEMORY_CACHE_BYTES", 100)   # this split is bigger than 100 bytes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmzoo.data"):
        result = fit(model, split, None, epochs=1, batch_size=4, progress=False)
    assert result.data["cache"] == "none" and result.data["augment"] is True
    assert "cache=none" in caplog.text
    with pytest.raises(InputError, match="cache='memory'"):
        fit(model, split, None, epochs=1, cache="memory", augment=True, progress=False)


def test_loaders_batch_what_the_model_takes_and_evaluation_matches_the_memory_path(tmp_path):
    split = _image_split(tmp_path / "img", 10)
    model = mmzoo.create(NAME, num_classes=2)
    model.processor.fit_text(split.inputs["text"])
    streamed = make_loader(model, split, batch_size=4, cache="none")
    cached = make_loader(model, split, batch_size=4, cache="memory")
    assert (streamed.cache, cached.cache, streamed.steps, cached.steps) == ("none", "memory", 3, 3)
    inputs, labels = next(iter(streamed))
    assert inputs["image"].shape == (4, 3, 8, 8) and labels.tolist() == [0, 1, 0, 1]
    assert set(inputs["text"]) == {"input_ids", "attention_mask"}
    model.eval()
    assert model(**inputs).shape == (4, 2)
    a = evaluate(model, split, cache="none", num_workers=0)
    b = evaluate(model, split, cache="memory")
    assert a == pytest.approx(b)


def test_word_dropout_drops_words_but_never_all():
    from mmzoo.collate import drop_words
    from mmzoo.processing import ScratchTextProcessor

    torch.manual_seed(0)
    text = "one two three four five six seven eight"
    draws = [drop_words(text, 0.5) for _ in range(20)]
    assert all(d and set(d.split()) <= set(text.split()) for d in draws)
    assert len(set(draws)) > 5 and min(len(d.split()) for d in draws) < 8
    assert drop_words("solo", 0.9) == "solo"
    assert all(drop_words("a b", 0.99) in ("a", "b") for _ in range(10))   # never every word
    collate = Collate({"text": ScratchTextProcessor(vocab_size=300)}, ["text"], word_dropout=0.5)
    batch, labels = collate([({"text": text}, 1), ({"text": "solo"}, 0)])
    assert batch["text"]["input_ids"].shape[0] == 2 and labels.tolist() == [1, 0]


# ------------------------------------------------------------------ augmentation
def test_augmentation_in_training_draws_only(tmp_path):
    model = mmzoo.create("cnn(img_size=32)/concat", num_classes=2)
    icon = str(ICONS / "acorn.png")
    split = Split(inputs={"image": [icon] * 4}, labels=torch.tensor([0, 1, 0, 1]))
    train = make_loader(model, split, batch_size=4, train=True, augment=True, shuffle=False)
    draws = []
    for epoch in range(2):
        train.set_epoch(epoch)
        draws.append(next(iter(train))[0]["image"])
    assert train.augment and not torch.equal(draws[0], draws[1])        # same images, new draws
    assert not torch.equal(draws[0][0], draws[0][1])                    # and per sample
    evaluation = make_loader(model, split, batch_size=4, cache="none")
    first, second = (next(iter(evaluation))[0]["image"] for _ in range(2))
    assert not evaluation.augment and torch.equal(first, second) and torch.equal(first[0], first[3])
    expected = model.processor(image=[icon])["image"][0]
    torch.testing.assert_close(first[0], expected)                       # eval = the plain processor
    options = make_loader(model, split, batch_size=4, train=True, augment=True,
                          augment_options={"hflip": 0.0, "scale": (1.0, 1.0), "ratio": (1.0, 1.0),
                                           "color_jitter": 0.0})
    torch.testing.assert_close(next(iter(options))[0]["image"][0], expected)  # options reach timm
    with pytest.raises(InputError, match="augmentation options"):
        make_loader(model, split, batch_size=4, train=True, augment=True, augment_options={"bogus": 1})


# ------------------------------------------------------------------ alpha
def test_transparent_icons_are_composited_not_flattened(tmp_path):
    from mmzoo.processing import ImageProcessor

    model = mmzoo.create("cnn(img_size=64)/concat", num_classes=2)
    processor = model.processor["image"]
    icons = [ICONS / "acorn.png", ICONS / "abacus.png"]
    with Image.open(icons[0]) as image:
        assert image.mode == "RGBA"                                       # the picture is in the alpha channel
    out = processor(icons)
    assert out[0].std() > 0.1 and out[1].std() > 0.1                      # not a constant square
    assert (out[0] - out[1]).abs().mean() > 0.05                          # two icons differ
    assert out[0].max() == pytest.approx((1 - 0.5) / 0.5, abs=1e-5)       # the background is white
    # black-on-transparent flattened without compositing is the old, constant result
    with Image.open(icons[0]) as image:
        dropped = processor.transform(image.convert("RGB"))
    assert dropped.std() == 0

    processor.data_config["background"] = (0, 0, 0)                       # configurable, and saved
    black = processor(icons[:1])
    assert black[0].max() < out[0].max()
    model.save_pretrained(tmp_path / "m")
    assert json.loads(next((tmp_path / "m").rglob("data_config.json")).read_text())["background"] == [0, 0, 0]
    loaded = mmzoo.load(tmp_path / "m")
    torch.testing.assert_close(loaded.processor["image"](icons[:1]), black)

    rgba = np.zeros((8, 8, 4), np.uint8)                                  # fully transparent array
    plain = ImageProcessor({"input_size": (3, 8, 8), "mean": (0, 0, 0), "std": (1, 1, 1), "crop_pct": 1.0,
                            "interpolation": "bilinear", "background": "red"})
    torch.testing.assert_close(plain([rgba])[0][:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    assert plain([palette])[0][0].min() == 1.0                            # P with a transparency key
    with pytest.raises(InputError, match="background"):
        ImageProcessor({"input_size": (3, 8, 8), "background": (1, 2)})([rgba])


# ------------------------------------------------------------------ errors
def test_a_missing_image_in_a_worker_is_an_input_error_with_the_path(tmp_path):
    split = _image_split(tmp_path / "img", 12)
    missing = split.inputs["image"][5]
    os.remove(missing)
    model = mmzoo.create(NAME, num_classes=2)
    with pytest.raises(InputError) as info:
        fit(model, split, None, epochs=1, batch_size=4, num_workers=2, cache="none", progress=False)
    message = str(info.value)
    assert missing in message and "does not exist" in message
    assert not message.startswith("Caught") and "Traceback" not in message


# ------------------------------------------------------------------ hf-dataset
@pytest.fixture(scope="module")
def hf_data(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    root = tmp_path_factory.mktemp("hf")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "animal": datasets.Value("string")})
    parquet = root / "parquet"
    parquet.mkdir()
    for split, start, n in (("train", 0, 16), ("validation", 16, 6), ("test", 22, 6)):
        rows = {"image": [{"bytes": _png(i), "path": None} for i in range(start, start + n)],
                "caption": [f"a {'bright' if i % 2 else 'dark'} one" for i in range(start, start + n)],
                "animal": ["cat" if i % 2 else "dog" for i in range(start, start + n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(parquet / f"{split}.parquet"))
    shards = root / "shards"
    shards.mkdir()
    for shard, start, n in (("train-00000", 0, 8), ("train-00001", 8, 8), ("validation-00000", 16, 6),
                            ("test-00000", 22, 6)):
        with tarfile.open(shards / f"{shard}.tar", "w") as tar:
            for i in range(start, start + n):
                for suffix, payload in (("png", _png(i)), ("txt", f"sample {'bright' if i % 2 else 'dark'}".encode()),
                                        ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


@pytest.mark.parametrize("layout", ["parquet", "shards"])
@pytest.mark.parametrize("streaming", [False, True])
def test_hf_dataset_task_trains_map_style_and_streaming(hf_data, layout, streaming, tmp_path):
    columns = ({"text_column": "caption", "label_column": "animal", "labels": "dog,cat"} if layout == "parquet"
               else {"labels": ("0", "1")})
    task = mmzoo.get_task("hf-dataset", path=str(hf_data / layout), streaming=streaming,
                          cache_dir=str(tmp_path / "cache"), **columns)
    splits = task.splits()
    assert task.inputs == ("image", "text") and task.num_classes == 2
    if not streaming:
        assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 6, 6]
        assert splits["train"].labels.tolist() == [i % 2 for i in range(16)]
    torch.manual_seed(0)
    model = mmzoo.create(NAME, num_classes=2, labels=list(task.labels))
    result = fit(model, splits["train"], splits["val"], epochs=2, batch_size=4, lr=3e-3, num_workers=2,
                 progress=False, **({} if streaming else {"cache": "none"}))
    assert result.data["cache"] == ("stream" if streaming else "none") and result.data["augment"]
    assert result.samples == 2 * 16
    scores = evaluate(model, splits["test"])
    assert set(scores) == {"accuracy", "macro_f1", "loss"} and scores["loss"] == scores["loss"]


def test_hf_dataset_single_split_is_divided_and_bad_columns_are_named(hf_data, tmp_path):
    task = mmzoo.get_task("hf-dataset", path=str(hf_data / "parquet" / "train.parquet"), text_column="caption",
                          label_column="animal", cache_dir=str(tmp_path / "cache"))
    splits = task.splits()
    assert task.labels == ["cat", "dog"] and sum(len(s) for s in splits.values()) == 16
    assert isinstance(splits["train"].inputs["image"][0], Image.Image)     # rows decoded one at a time
    with pytest.raises(InputError, match="no column 'words'.*caption"):
        mmzoo.get_task("hf-dataset", path=str(hf_data / "parquet"), text_column="words",
                       cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InputError, match="labels="):
        mmzoo.get_task("hf-dataset", path=str(hf_data / "shards"), streaming=True)
    with pytest.raises(InputError, match="does not exist"):
        mmzoo.get_task("hf-dataset", path=str(tmp_path / "nothing-here"))


# ------------------------------------------------------------------ torchrun
RANK_SCRIPT = """
import json, sys, torch
import mmzoo
from mmzoo.tasks import Split
from mmzoo.train import fit

torch.set_num_threads(1)
n = 20
images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
split = Split(inputs={"image": images}, labels=torch.arange(n) % 2)
torch.manual_seed(0)
model = mmzoo.create("cnn(channels=(4,),img_size=8,in_chans=1)/concat", num_classes=2)
seen = []
model.encoders["image"].register_forward_pre_hook(
    lambda module, args: seen.append([int(v) for v in args[0][:, 0, 0, 0].tolist()]) if module.training else None)
result = fit(model, split, None, epochs=2, batch_size=5, cache="none", progress=False)
import torch.distributed as dist
rank = dist.get_rank()
json.dump({"seen": seen, "world": dist.get_world_size(), "steps": result.steps},
          open(sys.argv[1] + f"/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_two_gloo_processes_each_see_a_disjoint_half(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["steps"] == ranks[1]["steps"] == 4
    for epoch in (0, 1):
        halves = [sorted(i for batch in r["seen"][2 * epoch:2 * epoch + 2] for i in batch) for r in ranks]
        assert len(halves[0]) == len(halves[1]) == 10
        assert not set(halves[0]) & set(halves[1])                        # disjoint ...
        assert sorted(halves[0] + halves[1]) == list(range(20))          # ... halves of all samples
    first = [i for batch in ranks[0]["seen"][:2] for i in batch]
    second = [i for batch in ranks[0]["seen"][2:] for i in batch]
    assert first != second                                               # set_epoch reshuffles
