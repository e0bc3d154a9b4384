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

    from mmzoo.plugins import PluginWarning, register_plugin
    from mmzoo.registry import Registry

    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    registry = Registry()
    with pytest.warns(PluginWarning, match="SystemExit"):
        info = register_plugin(registry, _plugin("exits", lambda r: sys.exit(3)), "exits")
    assert info.status == "error" and "SystemExit" in info.error
    good = register_plugin(registry, _plugin("good", lambda r: r.add_fusion("f", "x.y:Z")), "good")
    assert good.status == "ok" and registry.list("fusion") == ["f"]


def test_keyboard_interrupt_in_a_plugin_is_recorded_then_reraised(monkeypatch):
    from mmzoo.plugins import register_plugin
    from mmzoo.registry import Registry

    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    registry = Registry()

    def interrupt(r):
        r.add_fusion("half", "x.y:Z")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), pytest.warns(Warning):
        register_plugin(registry, _plugin("ctrl_c", interrupt), "ctrl_c")
    assert registry.plugins["ctrl_c"].status == "error"
    assert registry.list("fusion") == []  # rolled back


def test_strict_plugins_stay_strict_on_every_use(monkeypatch):
    import mmzoo.plugins
    from mmzoo.errors import PluginError

    def failing_discovery():
        raise PluginError("plugin 'broken' failed to load: boom")

    monkeypatch.setattr(mmzoo.plugins, "discover", failing_discovery)
    with mmzoo.plugins.use_registry(None):  # not discovered yet
        for _ in range(3):
            with pytest.raises(PluginError, match="broken"):
                mmzoo.list_fusions()
        with pytest.raises(PluginError, match="broken"):
            mmzoo.plugins.default_registry()


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


# ------------------------------------------------------------------ sizes (item 4)
HUGE = [
    "cnn+lstm(num_layers=100000)/concat",
    "cnn+gru(num_layers=100000)/concat",
    "cnn+transformer(depth=100000)/concat",
    f"cnn(channels={(100000,) * 50!r})+lstm/concat",
    "cnn+lstm/concat(dim=10000000000)",
    "cnn+lstm/attention(layers=100000)",
    "cnn+lstm/cross_attn(layers=100000)",
    "test_vit(embed_dim=100000)+lstm/concat",
]


@pytest.mark.parametrize("name", HUGE)
def test_an_absurd_size_is_refused_before_it_is_allocated(name, monkeypatch):
    from mmzoo._limits import MAX_PARAMS_ENV, ModelTooLarge

    mmzoo.create("cnn+lstm/concat")  # torch's device context caches its constructor set (torch.empty
    # among them) on first use: populate it before torch.empty is replaced below
    allocated = []
    real_empty = torch.empty

    def counting_empty(*args, **kwargs):  # what the real build would allocate
        tensor = real_empty(*args, **kwargs)
        if tensor.device.type != "meta":
            allocated.append(tensor.numel())
        return tensor

    monkeypatch.setattr(torch, "empty", counting_empty)
    with pytest.raises(ModelTooLarge, match=f"more than 2,000,000,000 parameters.*{MAX_PARAMS_ENV}=5e9"):
        mmzoo.create(name)
    assert sum(allocated) < 10_000_000  # at most the small parts built before the huge one


def test_a_deep_stack_is_refused_in_time_independent_of_its_depth():
    # refused from the kwargs before the first block: depth 10**3 and 10**7 cost the same
    def seconds(depth: int) -> float:
        start = time.perf_counter()
        with pytest.raises(InputError, match="would have more than"):
            mmzoo.create(f"cnn+transformer(depth={depth},dim=512,heads=8)/concat")
        return time.perf_counter() - start

    seconds(10_000)  # warm up
    small = min(seconds(10_000) for _ in range(3))
    large = min(seconds(10_000_000) for _ in range(3))
    assert large < 3 * small + 0.05, (small, large)


@pytest.mark.parametrize("name", ["test_vit(depth=200000)+lstm/concat",
                                  "cnn+transformer(depth=1000000,dim=8,heads=1)/concat"])
def test_a_deep_stack_of_tiny_layers_is_refused_by_its_module_count(name):
    # under the parameter limit, but minutes to build: the build stops at MAX_MODULES layers
    from torch.nn.modules.module import register_module_module_registration_hook

    from mmzoo._limits import MAX_MODULES

    built = []
    handle = register_module_module_registration_hook(lambda module, key, sub: built.append(key))
    try:
        with pytest.raises(InputError, match=f"more than {MAX_MODULES:,} modules.*MMZOO_MAX_PARAMS=inf"):
            mmzoo.create(name)
    finally:
        handle.remove()
    assert MAX_MODULES < len(built) <= MAX_MODULES + 1  # stopped at the first module past the limit


def test_the_limit_is_overridable_and_checked(monkeypatch):
    from mmzoo._limits import MAX_PARAMS_ENV

    name = "cnn(channels=(8,))+lstm(embed_dim=8,hidden_size=8,vocab_size=300)/concat(dim=8)"
    size = sum(p.numel() + 0 for p in mmzoo.create(name).parameters())
    monkeypatch.setenv(MAX_PARAMS_ENV, str(size - 1))
    with pytest.raises(InputError, match=f"more than {size - 1:,} parameters"):
        mmzoo.create(name)
    monkeypatch.setenv(MAX_PARAMS_ENV, str(size))
    assert sum(p.numel() for p in mmzoo.create(name).parameters()) == size
    monkeypatch.setenv(MAX_PARAMS_ENV, "lots")
    with pytest.raises(InputError, match=f"{MAX_PARAMS_ENV}='lots' is not a positive number"):
        mmzoo.create(name)


def test_the_dry_run_changes_nothing_in_the_real_model(monkeypatch):
    from mmzoo._limits import MAX_PARAMS_ENV

    name = "cnn(channels=(8,))+transformer(dim=16,heads=2,vocab_size=300)/perceiver(dim=16)"
    torch.manual_seed(0)
    checked = mmzoo.create(name, num_classes=2).state_dict()
    monkeypatch.setenv(MAX_PARAMS_ENV, "inf")  # no limit: no dry run
    torch.manual_seed(0)
    unchecked = mmzoo.create(name, num_classes=2).state_dict()
    assert checked.keys() == unchecked.keys()
    for key in checked:
        torch.testing.assert_close(checked[key], unchecked[key], rtol=0, atol=0)


def test_a_part_that_cannot_be_built_on_meta_is_built_for_real_and_still_counted(make_mmzoo_registry,
                                                                                   monkeypatch):
    import types

    from mmzoo.components import Encoder, EncoderOutput

    class ReadsValues(Encoder):  # .item() is impossible on the meta device
        modality = "image"

        def __init__(self, width: int = 4):
            super().__init__()
            self.proj = torch.nn.Linear(int(torch.tensor(width).item()), width)
            self.num_features = width

        def forward(self, x):
            return EncoderOutput(self.proj(x))

    plugin = types.ModuleType("values_plugin")

    @mmzoo.hookimpl
    def mmzoo_register(registry):
        registry.add_encoder("values", ReadsValues, modality="image")

    plugin.mmzoo_register = mmzoo_register
    make_mmzoo_registry(("values", plugin))
    assert mmzoo.create("values(width=4)/concat(dim=0)").num_features == 4
    monkeypatch.setenv("MMZOO_MAX_PARAMS", "100")
    with pytest.raises(InputError, match="more than 100 parameters"):
        mmzoo.create("values(width=40)/concat(dim=0)")


@pytest.mark.parametrize("channels", ["(0,)", "(8, -1)", "()", "(8.5,)", "(True,)", "8"])
def test_cnn_sizes_are_validated_at_build_time(channels):
    with pytest.raises(InputError, match=r"cnn: channels=.* is invalid; give a tuple of positive"):
        mmzoo.create(f"cnn(channels={channels})+lstm/concat")


@pytest.mark.parametrize("kwarg", ["in_chans=0", "img_size=-3"])
def test_cnn_input_sizes_are_validated(kwarg):
    with pytest.raises(InputError, match=f"cnn: {kwarg.split('=')[0]}=.* is invalid"):
        mmzoo.create(f"cnn({kwarg})+lstm/concat")


def test_a_kwarg_refused_by_a_kwargs_factory_is_an_unknown_name_with_close_matches():
    with pytest.raises(mmzoo.errors.UnknownNameError,
                       match=r"'test_resnet' has no argument 'drop_path' \(did you mean 'drop_path_rate'\?\)"):
        mmzoo.create("test_resnet(drop_path=0.1)+lstm/concat")


# ------------------------------------------------------------ image inputs (item 14)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_image_tensors_of_another_float_dtype_are_cast_to_the_model(dtype):
    model = mmzoo.create("cnn(channels=(4,))+lstm/concat(dim=8)", num_classes=2).eval()
    image = torch.rand(2, 3, 32, 32)
    expected = model(image=image.to(dtype).float())
    got = model(image=image.to(dtype))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 0, 3), np.uint8), "has no pixels"),
    (np.zeros((4, 0), np.float32), "has no pixels"),
    (np.zeros(5, np.uint8), r"must be \(H, W\) or \(H, W, C\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"must be \(H, W\) or \(H, W, C\)"),
    (np.zeros((4, 4, 2), np.uint8), "C = 1, 3 or 4"),
    (np.array([[object(), object()]], dtype=object), "got dtype object"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN or infinite"),
    (np.full((4, 4), np.inf, np.float64), "NaN or infinite"),
])
def test_odd_arrays_to_the_image_processor_name_the_sample(array, message):
    model = mmzoo.create("cnn(channels=(4,))+lstm/concat(dim=8)")
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match=f"image 1: .*{message}"):
        model.processor(image=[good, array])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_image_processor_takes_tensors_of_any_float_dtype(dtype):
    model = mmzoo.create("cnn(channels=(4,))+lstm/concat(dim=8)")
    image = torch.rand(3, 8, 8)
    expected = model.processor(image=[image])["image"]
    torch.testing.assert_close(model.processor(image=[image.to(dtype)])["image"], expected,
                               atol=2 / 255 / 0.5, rtol=0)


# --------------------------------------------- compile (issue 8, speed seams)
def test_forward_compiles_into_one_graph():
    # backend="eager" still traces with dynamo: fullgraph=True fails on any graph break
    # (a host sync such as bool(tensor)); inductor would only add minutes of codegen here
    name = "cnn(channels=(8,))+transformer(dim=16,depth=1,heads=2,vocab_size=300)/attention(dim=16,heads=2)"
    model = mmzoo.create(name, num_classes=3, modality_dropout=0.3)
    inputs = dict(image=torch.randn(4, 3, 16, 16), text=torch.randint(1, 300, (4, 5)),
                  present={"text": torch.tensor([True, False, True, True])})
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    model.eval()
    torch.testing.assert_close(compiled(**inputs), model(**inputs))
    model.train()
    torch.manual_seed(0)
    out = compiled(**inputs)
    out.sum().backward()
    assert out.shape == (4, 3) and model.head[1].weight.grad is not None


def test_modality_dropout_keeps_an_input_for_every_sample_without_branching():
    from mmzoo.model import _drop_inputs

    torch.manual_seed(0)
    masks = {"a": torch.ones(1000, dtype=torch.bool), "b": torch.rand(1000) > 0.5}
    dropped = _drop_inputs(masks, 0.9)
    assert bool((dropped["a"] | dropped["b"]).all())
    assert not bool((dropped["b"] & ~masks["b"]).any())  # never adds an input
    assert 0.05 < dropped["a"].float().mean() < 0.95


def test_a_timm_backbone_with_no_input_channels_is_refused_at_build_time():
    # timm builds a zero-element stem for in_chans=0 (and only warns): refused with the kwarg named
    with pytest.raises(InputError, match=r"test_resnet: in_chans=0 is invalid; give an integer >= 1"):
        mmzoo.create("test_resnet(in_chans=0)+lstm/concat")
