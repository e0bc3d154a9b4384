"""fsdd-digits on the real FSDD recordings (skipped when they are absent)."""

import pytest
import torch

import mmzoo
from mmzoo.errors import InputError
from mmzoo_audio.tasks import ENV_VAR

from audio_names import TINY_AUDIO


@pytest.fixture(scope="module")
def task(fsdd_root, registry):
    return mmzoo.get_task("fsdd-digits", data=str(fsdd_root), registry=registry)


def test_standard_split(task):
    splits = task.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 2400, "val": 300, "test": 300}
    assert task.inputs == ("image", "audio") and task.num_classes == 10
    for name, split in splits.items():
        indices = {int(p.rsplit("_", 1)[1][:-4]) for p in split.inputs["audio"]}
        expected = {"test": set(range(5)), "val": set(range(5, 10)), "train": set(range(10, 50))}[name]
        assert indices == expected  # FSDD's split: index 0-4 is test
        digits = [int(p.rsplit("/", 1)[1][0]) for p in split.inputs["audio"]]
        assert digits == split.labels.tolist()
        assert set(split.groups) == {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
        assert torch.bincount(split.labels, minlength=10).tolist() == [len(split) // 10] * 10


def test_images_match_labels_and_never_cross_splits(task):
    from sklearn.datasets import load_digits

    target = load_digits().target
    splits = task.splits()
    used = {name: set(task.image_indices[name]) for name in splits}
    assert not (used["train"] & used["test"]) and not (used["train"] & used["val"]) and not (used["val"] & used["test"])
    for name, split in splits.items():
        assert target[task.image_indices[name]].tolist() == split.labels.tolist()
        assert split.inputs["image"][0].shape == (8, 8) and split.inputs["image"][0].dtype.name == "uint8"


def test_seeded(fsdd_root, registry):
    a = mmzoo.get_task("fsdd-digits", data_root=fsdd_root, seed=1, registry=registry)
    b = mmzoo.get_task("fsdd-digits", data=fsdd_root, seed=1, registry=registry)
    a.splits(), b.splits()
    assert a.image_indices == b.image_indices


def test_env_var_default(fsdd_root, registry, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(fsdd_root / "recordings"))  # the recordings folder itself works too
    assert len(mmzoo.get_task("fsdd-digits", registry=registry).splits()["test"]) == 300


def test_a_model_reads_the_task(task, registry):
    model = mmzoo.create(f"cnn(channels=(4,),in_chans=1,img_size=8)+{TINY_AUDIO}/concat",
                         num_classes=task.num_classes, registry=registry)
    split = task.splits()["test"]
    batch = model.processor(image=split.inputs["image"][:4], audio=split.inputs["audio"][:4])
    assert batch["audio"].shape == (4, 4000) and batch["image"].shape == (4, 1, 8, 8)
    assert model(**batch).shape == (4, 10)


def test_clear_error_when_the_data_is_missing(tmp_path, registry, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(InputError, match=rf"free-spoken-digit-dataset.*{ENV_VAR}"):
        mmzoo.get_task("fsdd-digits", registry=registry).splits()
    with pytest.raises(InputError, match="does not exist.*git clone"):
        mmzoo.get_task("fsdd-digits", data=tmp_path / "nope", registry=registry).splits()
    with pytest.raises(InputError, match="no recordings"):
        mmzoo.get_task("fsdd-digits", data=tmp_path, registry=registry).splits()
