"""Regression tests for hostile names and inputs (issue: hostile files and inputs)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import mmzoo
from mmzoo.errors import InputError, NameSyntaxError
from mmzoo.names import MAX_NAME_LENGTH
from mmzoo.testing import make_mmzoo_registry  # noqa: F401 - fixture


def _reject_seconds(n: int) -> float:
    name = "a" * n + "!" + "a" * n + "/concat"
    start = time.perf_counter()
    with pytest.raises(NameSyntaxError, match="may only contain"):
        mmzoo.parse_name(name)
    return time.perf_counter() - start


def test_bad_identifier_is_rejected_in_linear_time():
    # the old search re-matched every prefix (quadratic); compare two sizes, 4x apart
    _reject_seconds(200)  # warm up
    small = min(_reject_seconds(1_000) for _ in range(3))
    large = min(_reject_seconds(4_000) for _ in range(3))
    assert large < 12 * small + 0.01, (small, large)  # quadratic would be ~16x


def test_bad_character_column_is_exact():
    with pytest.raises(NameSyntaxError) as info:
        mmzoo.parse_name("res!net+lstm/concat")
    assert info.value.column == 3


def test_a_huge_name_is_refused_before_scanning():
    start = time.perf_counter()
    with pytest.raises(NameSyntaxError, match=f"limited to {MAX_NAME_LENGTH:,}"):
        mmzoo.parse_name("a" * 1_000_000 + "/concat")
    assert time.perf_counter() - start < 1.0
    with pytest.raises(NameSyntaxError, match="limited to"):
        mmzoo.names.parse_part("a" * (MAX_NAME_LENGTH + 1))


@pytest.mark.parametrize("literal, kind", [("b'x'", "bytes"), ("{1, 2}", "set"), ("{'a': 1}", "dict"),
                                           ("...", "ellipsis"), ("(1, b'x')", "bytes"), ("1j", "complex")])
def test_only_documented_literal_types_are_allowed(literal, kind):
    with pytest.raises(NameSyntaxError, match=f"is a {kind}; a name allows only int, float, bool, str"):
        mmzoo.parse_name(f"cnn(channels={literal})+lstm/concat")


def test_huge_integers_are_refused_and_allowed_ones_print_back():
    with pytest.raises(NameSyntaxError, match="more than 100 digits"):
        mmzoo.parse_name("cnn(channels=(" + "9" * 400 + ",))+lstm/concat")
    name = mmzoo.parse_name("cnn(channels=(16, -2, 1.5, None, True, 'x'))+lstm/concat")
    assert mmzoo.parse_name(str(name)) == name


@pytest.mark.parametrize("name, part", [
    ("cnn+lstm(hidden_size=0)/concat", "lstm(hidden_size=0)"),
    ("cnn+lstm(vocab_size=0)/concat", "lstm(vocab_size=0)"),
    ("cnn(channels=(8,))+lstm(num_layers=2,dropout=2.0)/concat", "lstm(dropout=2.0,num_layers=2)"),
])
def test_constructor_errors_become_input_errors_naming_the_part(name, part):
    with pytest.raises(InputError) as info:
        mmzoo.create(name)
    assert f"cannot build encoder {part!r}" in str(info.value)


def test_constructor_exception_is_chained():
    with pytest.raises(InputError, match=r"cannot build encoder 'lstm\(hidden_size=0\)'") as info:
        mmzoo.create("cnn+lstm(hidden_size=0)/concat")
    assert info.value.__cause__ is not None


def test_plugin_factory_that_raises_or_returns_none(make_mmzoo_registry):
    import types

    def broken(**kwargs):
        raise ZeroDivisionError("boom")

    plugin = types.ModuleType("hostile_plugin")

    @mmzoo.hookimpl
    def mmzoo_register(registry):
        registry.add_encoder("raises", broken, modality="image")
        registry.add_encoder("returns_none", lambda **kw: None, modality="image")

    plugin.mmzoo_register = mmzoo_register
    make_mmzoo_registry(("hostile", plugin))
    with pytest.raises(InputError, match="ZeroDivisionError: boom") as info:
        mmzoo.create("raises+lstm/concat")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(InputError, match="factory returned None"):
        mmzoo.create("returns_none+lstm/concat")


@pytest.mark.parametrize("name", ["cnn+lstm/concat", "cnn+gru/concat", "cnn+transformer/concat"])
def test_an_empty_text_is_a_missing_input(name):
    model = mmzoo.create(name, num_classes=3).eval()
    image = np.zeros((8, 8, 3), np.uint8)
    alone = model(**model.processor(image=[image]))
    with_empty = model(**model.processor(image=[image], text=[""]))
    torch.testing.assert_close(with_empty, alone)
    mixed = model(**model.processor(image=[image, image], text=["", "a red car"]))
    torch.testing.assert_close(mixed[0], alone[0])


def test_an_empty_batch_is_a_clear_error():
    model = mmzoo.create("cnn+lstm/concat", num_classes=3).eval()
    with pytest.raises(InputError, match="the batch is empty"):
        model(image=torch.zeros(0, 3, 32, 32))
    with pytest.raises(InputError, match="the batch is empty"):
        model(text=torch.zeros(0, 5, dtype=torch.long))


def test_results_file_survives_torn_lines_bad_bytes_bom_and_non_objects(tmp_path, capsys):
    from mmzoo.bench import append_row, read_rows

    path = tmp_path / "results.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"name": "first"}\n[1, 2]\n{"name": "bad \xff byte"}\n{"name": "tor')
    append_row(path, {"name": "after-torn"})
    names = [row["name"] for row in read_rows(path)]
    assert names == ["first", "after-torn"]
    err = capsys.readouterr().err
    assert "line 2" in err and "not a JSON object" in err
    assert "line 3" in err and "line 4" in err
    append_row(path, {"name": "next"})
    assert [row["name"] for row in read_rows(path)] == ["first", "after-torn", "next"]


@pytest.fixture
def saved_model(tmp_path):
    model = mmzoo.create("cnn(channels=(4,))+lstm(embed_dim=8,hidden_size=8,vocab_size=300)/concat(dim=8)",
                         num_classes=2)
    return model.save_pretrained(tmp_path / "run")


def _edit_config(path, **fields):
    import json

    config = json.loads((path / "config.json").read_text())
    config.update(fields)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("value", [None, ""])
def test_absent_checksum_is_an_error_unless_opted_out(saved_model, value):
    _edit_config(saved_model, weights_sha256=value)
    with pytest.raises(mmzoo.errors.WeightsError, match="records no weights_sha256"):
        mmzoo.load(saved_model)
    assert mmzoo.load(saved_model, verify_checksum=False).num_classes == 2


@pytest.mark.parametrize("field, value", [("format_version", True), ("num_classes", "3"),
                                          ("num_classes", True), ("name", 5)])
def test_loose_config_field_types_are_refused(saved_model, field, value):
    _edit_config(saved_model, **{field: value})
    with pytest.raises(mmzoo.errors.WeightsError, match=field):
        mmzoo.load(saved_model)


def test_weights_of_the_wrong_dtype_are_refused(saved_model):
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved_model / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].to(torch.int32)
    save_file(state, str(saved_model / "model.safetensors"))
    with pytest.raises(mmzoo.errors.WeightsError, match=f"{key}: checkpoint torch.int32 vs model torch.float32"):
        mmzoo.load(saved_model, verify_checksum=False)


def _plugin(name, body):
    import types

    module = types.ModuleType(name)

    @mmzoo.hookimpl
    def mmzoo_register(registry):
        body(registry)

    module.mmzoo_register = mmzoo_register
    return module


def test_a_plugin_calling_sys_exit_is_reported_and_the_others_load(monkeypatch):
    import sys

    from mmzoo.plugins import PluginWarning
    from mmzoo.registry import Registry

    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    registry = Registry(autoload=False)
    with pytest.warns(PluginWarning, match="SystemExit"):
        info = registry.register_plugin(_plugin("exits", lambda r: sys.exit(3)), "exits")
    assert info.status == "error" and "SystemExit" in info.error
    good = registry.register_plugin(_plugin("good", lambda r: r.add_fusion("f", "x.y:Z")), "good")
    assert good.status == "ok" and registry.list("fusion") == ["f"]


def test_keyboard_interrupt_in_a_plugin_is_recorded_then_reraised(monkeypatch):
    from mmzoo.registry import Registry

    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    registry = Registry(autoload=False)

    def interrupt(r):
        r.add_fusion("half", "x.y:Z")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), pytest.warns(Warning):
        registry.register_plugin(_plugin("ctrl_c", interrupt), "ctrl_c")
    assert registry.plugins["ctrl_c"].status == "error"
    assert registry.list("fusion") == []  # rolled back


def test_strict_plugins_stay_strict_on_every_use(monkeypatch):
    import mmzoo.plugins
    from mmzoo.errors import PluginError
    from mmzoo.registry import Registry

    def failing_discovery(registry):
        raise PluginError("plugin 'broken' failed to load: boom")

    monkeypatch.setattr(mmzoo.plugins, "load_plugins", failing_discovery)
    registry = Registry()
    for _ in range(3):
        with pytest.raises(PluginError, match="broken"):
            registry.list("fusion")
    with pytest.raises(PluginError, match="broken"):
        registry.plugins


def test_save_errors_name_the_path(tmp_path):
    model = mmzoo.create("cnn(channels=(4,))+lstm(embed_dim=8,hidden_size=8,vocab_size=300)/concat(dim=8)")
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(mmzoo.errors.WeightsError, match="it is a file, not a folder"):
        model.save_pretrained(afile)
    (tmp_path / "run" / "config.json").mkdir(parents=True)
    with pytest.raises(mmzoo.errors.WeightsError, match="config.json is a folder"):
        model.save_pretrained(tmp_path / "run")
    with pytest.raises(mmzoo.errors.WeightsError, match="cannot create the model folder"):
        model.save_pretrained(afile / "below")


def test_present_that_is_not_a_mask_is_an_input_error():
    model = mmzoo.create("cnn+lstm/concat", num_classes=2).eval()
    with pytest.raises(InputError, match=r"present\['text'\] must be a bool tensor"):
        model(image=torch.zeros(2, 3, 32, 32), text=torch.ones(2, 3, dtype=torch.long), present={"text": "yes"})
