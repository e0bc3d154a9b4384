"""Registry and plugin discovery, with fake plugins installed as real
distributions (a *.dist-info with entry_points.txt on sys.path)."""

import subprocess
import sys
import textwrap
import uuid

import pytest

import mmzoo
from mmzoo.errors import AmbiguousNameError, PluginError, UnknownNameError
from mmzoo.plugins import PluginWarning, discover, plugin_manager, register_plugin
from mmzoo.registry import Registry


def install_fake_plugin(root, dist, entry_name, body):
    """Write a module and a dist-info for it, as pip would leave them."""
    module = f"fake_{entry_name}_{uuid.uuid4().hex[:8]}"
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[mmzoo]\n{entry_name} = {module}\n")
    return module


GOOD = """
    import mmzoo

    @mmzoo.hookimpl
    def mmzoo_register(registry):
        registry.add_fusion("{name}", "mmzoo.builtin.fusions.concat:ConcatFusion")
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("MMZOO_LOAD_PLUGINS", "MMZOO_DISABLE_PLUGINS", "MMZOO_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_builtins_are_plugins():
    registry = discover()
    names = {name for name, info in registry.plugins.items() if info.builtin} if registry.list("fusion") else set()
    assert {"timm", "text", "hf", "fusions", "tasks"} <= names
    assert all(registry.plugins[n].status == "ok" for n in names)
    assert "concat" in registry.list("fusion")
    assert "fusion:concat" in registry.plugins["fusions"].components


def test_third_party_plugin_is_discovered(site):
    install_fake_plugin(site, "extra-fusions", "extra", GOOD.format(name="myfuse"))
    registry = discover()
    assert "myfuse" in registry.list("fusion")
    info = registry.plugins["extra"]
    assert (info.status, info.distribution, info.version) == ("ok", "extra-fusions", "1.2.3")
    assert registry.get("fusion", "extra:myfuse").plugin == "extra"


def test_broken_plugin_is_reported_and_others_work(site):
    install_fake_plugin(site, "broken-dist", "broken", "raise RuntimeError('boom at import')\n")
    install_fake_plugin(site, "good-dist", "good", GOOD.format(name="goodfuse"))
    with pytest.warns(PluginWarning, match="boom at import"):
        registry = discover()
    names = registry.list("fusion")
    assert "goodfuse" in names and "concat" in names
    assert registry.plugins["broken"].status == "error"
    assert "boom at import" in registry.plugins["broken"].error
    with pytest.raises(UnknownNameError) as info:
        registry.resolve("fusion", "missingfuse")
    assert "broken" in str(info.value) and "boom at import" in str(info.value)


def test_plugin_failing_half_way_is_rolled_back(site):
    install_fake_plugin(site, "half-dist", "half", """
        import mmzoo

        @mmzoo.hookimpl
        def mmzoo_register(registry):
            registry.add_fusion("halffuse", "mmzoo.builtin.fusions.concat:ConcatFusion")
            raise ValueError("second step failed")
    """)
    with pytest.warns(PluginWarning, match="second step failed"):
        registry = discover()
    assert "halffuse" not in registry.list("fusion") and "concat" in registry.list("fusion")
    assert registry.plugins["half"].components == []


def test_strict_mode_raises(site, monkeypatch):
    install_fake_plugin(site, "broken-dist", "broken", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("MMZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="boom"):
        discover()


def test_two_plugins_claiming_one_name(site):
    install_fake_plugin(site, "dist-a", "alpha", GOOD.format(name="twin"))
    install_fake_plugin(site, "dist-b", "beta", GOOD.format(name="twin"))
    registry = discover()
    with pytest.raises(AmbiguousNameError) as info:
        registry.resolve("fusion", "twin")
    assert "alpha:twin" in str(info.value) and "beta:twin" in str(info.value)
    assert registry.resolve("fusion", "beta:twin").plugin == "beta"
    model = mmzoo.create("cnn(channels=(4,))+cnn(channels=(4,))/alpha:twin", registry=registry)
    # "twin" alone is ambiguous here: the canonical name keeps the plugin, so it rebuilds
    assert model.name.endswith("/alpha:twin(dim=256)")
    assert mmzoo.create(model.name, registry=registry).name == model.name
    assert model.config["fusion"]["name"] == "alpha:twin"


def test_same_entry_point_name_twice(site):
    install_fake_plugin(site, "dist-a", "same", GOOD.format(name="onefuse"))
    install_fake_plugin(site, "dist-b", "same", GOOD.format(name="otherfuse"))
    with pytest.warns(PluginWarning, match="already used"):
        registry = discover()
    errors = [p for p in registry.plugins.values() if p.status == "error"]
    assert len(errors) == 1 and "same" in errors[0].name


def test_env_controls(site, monkeypatch):
    install_fake_plugin(site, "extra-fusions", "extra", GOOD.format(name="myfuse"))
    monkeypatch.setenv("MMZOO_LOAD_PLUGINS", "")
    registry = discover()
    assert "myfuse" not in registry.list("fusion")
    assert registry.plugins["extra"].status == "disabled"

    monkeypatch.setenv("MMZOO_LOAD_PLUGINS", "extra")
    assert "myfuse" in discover().list("fusion")

    monkeypatch.delenv("MMZOO_LOAD_PLUGINS")
    monkeypatch.setenv("MMZOO_DISABLE_PLUGINS", "extra,fusions")
    registry = discover()
    assert registry.list("fusion") == []
    assert registry.plugins["fusions"].status == "disabled"


def test_clean_registry_and_direct_registration():
    registry = Registry()
    assert registry.list("fusion") == [] and registry.list("encoder") == []

    class Plugin:
        @mmzoo.hookimpl
        def mmzoo_register(self, registry):
            registry.add_fusion("mine", "mmzoo.builtin.fusions.concat:ConcatFusion", description="x")

    info = register_plugin(registry, Plugin(), "mine-plugin")
    assert info.status == "ok" and registry.list("fusion") == ["mine"]


def test_invalid_registrations_are_plugin_errors(monkeypatch):
    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    registry = Registry()

    class Bad:
        @mmzoo.hookimpl
        def mmzoo_register(self, registry):
            registry.add_fusion("bad name", "x:y")

    with pytest.warns(PluginWarning, match="cannot register fusion 'bad name'"):
        info = register_plugin(registry, Bad(), "bad")
    assert info.status == "error"


def test_listing_filters_and_natural_sort():
    names = mmzoo.list_encoders("resnet1*", modality="image")
    assert "resnet18" in names and "lstm" not in names
    assert names.index("resnet18") < names.index("resnet101")
    assert mmzoo.list_encoders(["lstm", "gru"]) == ["gru", "lstm"]
    assert mmzoo.list_fusions("c*", exclude_filters="cross*") == ["concat"]
    assert "survey" in mmzoo.list_models()


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'concat'"):
        mmzoo.create("cnn+lstm/concatt")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        mmzoo.create("resnet81+lstm/concat")
    with pytest.raises(UnknownNameError, match="did you mean 'hidden_size'"):
        mmzoo.create("cnn+lstm(hiden_size=3)/concat")


def test_import_is_light():
    code = (
        "import sys, mmzoo\n"
        "fusions = mmzoo.list_fusions(); models = mmzoo.list_models(); tasks = mmzoo.list_tasks()\n"
        "mmzoo.parse_name('a+b/c')\n"
        "heavy = [m for m in ('torch', 'timm', 'transformers', 'tokenizers') if m in sys.modules]\n"
        "assert fusions and not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------ the plugin transaction


def test_plugin_transaction_is_all_or_nothing():
    registry = Registry()
    with registry.plugin("keep") as registered:
        registry.add_fusion("kept", "mmzoo.builtin.fusions.concat:ConcatFusion")
    assert registered == ["fusion:kept"]
    with pytest.raises(RuntimeError, match="half-way"):
        with registry.plugin("half"):
            registry.add_fusion("gone", "mmzoo.builtin.fusions.concat:ConcatFusion")
            registry.add_alias("also_gone", "kept", kind="fusion")
            registry.add_resolver("gone_ns", "x.y:resolve", modality="image")
            raise RuntimeError("failed half-way")
    assert registry.list("fusion") == ["kept"]
    with pytest.raises(UnknownNameError):
        registry.get("fusion", "also_gone")
    with registry.plugin("half"):  # the name is free again, and so are its names
        registry.add_resolver("gone_ns", "x.y:resolve", modality="image")
    with pytest.raises(PluginError, match="'keep' is already registered"):
        with registry.plugin("keep"):
            pass
    assert registry.get("fusion", "kept").plugin == "keep"


# ------------------------------------------------------------ pluggy


def test_a_hook_gets_only_the_arguments_it_names():
    """Hooks may gain arguments: an implementation that names fewer still works."""
    calls = []

    class NoArguments:
        @mmzoo.hookimpl
        def mmzoo_register(self):
            calls.append("called")

    info = register_plugin(Registry(), NoArguments(), "no-arguments")
    assert (info.status, info.error, calls) == ("ok", None, ["called"])


def test_a_hook_naming_an_unknown_argument_is_refused(monkeypatch):
    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)

    class Future:
        @mmzoo.hookimpl
        def mmzoo_register(self, registry, something_new):
            registry.add_fusion("future", "mmzoo.builtin.fusions.concat:ConcatFusion")

    registry = Registry()
    with pytest.warns(PluginWarning, match="something_new"):
        info = register_plugin(registry, Future(), "future")
    assert info.status == "error" and "hookspec" in info.error
    assert registry.list("fusion") == [] and not plugin_manager(registry).has_plugin("future")


def test_a_plugin_that_is_not_hashable_gets_a_clear_error(monkeypatch):
    import types

    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    plugin = types.SimpleNamespace(mmzoo_register=mmzoo.hookimpl(lambda registry: None))
    with pytest.warns(PluginWarning, match="module or a class instance"):
        assert register_plugin(Registry(), plugin, "ns").status == "error"


ORDERED = """
    import mmzoo

    seen = []

    @mmzoo.hookimpl({when}=True)
    def mmzoo_register(registry):
        seen.extend(registry.list("fusion"))
        registry.add_fusion("{name}", "mmzoo.builtin.fusions.concat:ConcatFusion")
"""


def test_tryfirst_and_trylast_order_the_plugins(site):
    first = install_fake_plugin(site, "first-dist", "first", ORDERED.format(when="tryfirst", name="firstfuse"))
    last = install_fake_plugin(site, "last-dist", "last", ORDERED.format(when="trylast", name="lastfuse"))
    install_fake_plugin(site, "plain-dist", "plain", GOOD.format(name="plainfuse"))
    registry = discover()
    assert sys.modules[first].seen == []  # before the built-ins, which are otherwise called first
    assert {"concat", "firstfuse", "plainfuse"} <= set(sys.modules[last].seen)  # after everyone
    assert "lastfuse" not in sys.modules[last].seen


def test_one_plugin_manager_holds_every_plugin(site, monkeypatch):
    install_fake_plugin(site, "extra-fusions", "extra", GOOD.format(name="myfuse"))
    install_fake_plugin(site, "broken-dist", "broken", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("MMZOO_DISABLE_PLUGINS", "text")
    with pytest.warns(PluginWarning, match="boom"):
        registry = discover()
    manager = plugin_manager(registry)
    ok = {name for name, info in registry.plugins.items() if info.status == "ok"}
    assert {"timm", "fusions", "extra", "audio"} <= ok
    assert {name for name, _ in manager.list_name_plugin()} == ok | {"text"}  # text: blocked
    assert manager.is_blocked("text") and registry.plugins["text"].status == "disabled"
    assert manager.get_plugin("extra").__name__ == registry.plugins["extra"].module.split(":")[0]
    # a blocked name stays disabled when registered by hand
    import mmzoo.builtin.text_plugin as text_plugin

    assert register_plugin(registry, text_plugin, "text").status == "disabled"
    assert "lstm" not in registry.list("encoder", "lstm")


def test_a_plugin_using_the_default_registry_during_discovery_is_stopped(site, monkeypatch):
    install_fake_plugin(site, "eager-dist", "eager", """
        import mmzoo

        @mmzoo.hookimpl
        def mmzoo_register(registry):
            mmzoo.list_fusions()  # the default registry, which is being discovered right now
    """)
    with mmzoo.plugins.use_registry(None), pytest.warns(PluginWarning, match="being discovered"):
        registry = mmzoo.default_registry()
    assert registry.plugins["eager"].status == "error" and "concat" in registry.list("fusion")


# ------------------------------------------------------------ canonical names


SHADOW = """
    import mmzoo

    @mmzoo.hookimpl
    def mmzoo_register(registry):
        registry.add_encoder("test_resnet", "mmzoo.builtin.image:SmallCNN", modality="image")
"""


def test_a_namespace_name_shadowed_by_a_component_stays_qualified(site, tmp_path):
    install_fake_plugin(site, "shadow-dist", "shadow", SHADOW)
    registry = discover()
    assert registry.resolve("encoder", "timm:test_resnet").name == "timm:test_resnet"
    assert registry.resolve("encoder", "timm:test_efficientnet").name == "test_efficientnet"
    model = mmzoo.create("timm:test_resnet+lstm(embed_dim=8,hidden_size=8)/concat", registry=registry)
    assert model.name.startswith("timm:test_resnet")
    again = mmzoo.create(model.name, registry=registry)
    assert type(again.encoders["image"]) is type(model.encoders["image"])
    assert type(mmzoo.create("test_resnet+lstm/concat", registry=registry).encoders["image"]).__name__ == \
        "SmallCNN"


def test_an_ambiguous_name_is_saved_qualified_and_loads(site, tmp_path, monkeypatch):
    install_fake_plugin(site, "dist-a", "alpha", GOOD.format(name="twin"))
    install_fake_plugin(site, "dist-b", "beta", GOOD.format(name="twin"))
    registry = discover()
    model = mmzoo.create("cnn(channels=(4,))+lstm(embed_dim=8,hidden_size=8)/beta:twin", num_classes=2,
                         registry=registry)
    assert model.name.endswith("/beta:twin(dim=256)")
    model.save_pretrained(tmp_path / "m")
    loaded = mmzoo.load(tmp_path / "m", registry=registry)
    assert loaded.name == model.name and loaded.config["fusion"]["plugin"] == "beta"
    # where the short name is unique, a qualified name prints short
    monkeypatch.setenv("MMZOO_DISABLE_PLUGINS", "alpha")
    alone = mmzoo.create("cnn(channels=(4,))+lstm(embed_dim=8,hidden_size=8)/beta:twin", registry=discover())
    assert alone.name.endswith("/twin(dim=256)")
