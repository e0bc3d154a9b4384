"""Registry and plugin discovery, with fake plugins installed as real
distributions (a *.dist-info with entry_points.txt on sys.path)."""

import subprocess
import sys
import textwrap
import uuid

import pytest

import mmzoo
from mmzoo.errors import AmbiguousNameError, PluginError, UnknownNameError
from mmzoo.plugins import PluginWarning
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
    registry = Registry()
    names = {name for name, info in registry.plugins.items() if info.builtin} if registry.list("fusion") else set()
    assert {"timm", "text", "hf", "fusions", "tasks"} <= names
    assert all(registry.plugins[n].status == "ok" for n in names)
    assert "concat" in registry.list("fusion")
    assert "fusion:concat" in registry.plugins["fusions"].components


def test_third_party_plugin_is_discovered(site):
    install_fake_plugin(site, "extra-fusions", "extra", GOOD.format(name="myfuse"))
    registry = Registry()
    assert "myfuse" in registry.list("fusion")
    info = registry.plugins["extra"]
    assert (info.status, info.distribution, info.version) == ("ok", "extra-fusions", "1.2.3")
    assert registry.get("fusion", "extra:myfuse").plugin == "extra"


def test_broken_plugin_is_reported_and_others_work(site):
    install_fake_plugin(site, "broken-dist", "broken", "raise RuntimeError('boom at import')\n")
    install_fake_plugin(site, "good-dist", "good", GOOD.format(name="goodfuse"))
    registry = Registry()
    with pytest.warns(PluginWarning, match="boom at import"):
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
    registry = Registry()
    with pytest.warns(PluginWarning, match="second step failed"):
        assert "halffuse" not in registry.list("fusion")


def test_strict_mode_raises(site, monkeypatch):
    install_fake_plugin(site, "broken-dist", "broken", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("MMZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="boom"):
        Registry().list("fusion")


def test_two_plugins_claiming_one_name(site):
    install_fake_plugin(site, "dist-a", "alpha", GOOD.format(name="twin"))
    install_fake_plugin(site, "dist-b", "beta", GOOD.format(name="twin"))
    registry = Registry()
    with pytest.raises(AmbiguousNameError) as info:
        registry.resolve("fusion", "twin")
    assert "alpha:twin" in str(info.value) and "beta:twin" in str(info.value)
    assert registry.resolve("fusion", "beta:twin").plugin == "beta"
    model = mmzoo.create("cnn(channels=(4,))+cnn(channels=(4,))/alpha:twin", registry=registry)
    assert model.name.endswith("/twin(dim=256)")


def test_same_entry_point_name_twice(site):
    install_fake_plugin(site, "dist-a", "same", GOOD.format(name="onefuse"))
    install_fake_plugin(site, "dist-b", "same", GOOD.format(name="otherfuse"))
    registry = Registry()
    with pytest.warns(PluginWarning, match="already used"):
        registry.list("fusion")
    errors = [p for p in registry.plugins.values() if p.status == "error"]
    assert len(errors) == 1 and "same" in errors[0].name


def test_env_controls(site, monkeypatch):
    install_fake_plugin(site, "extra-fusions", "extra", GOOD.format(name="myfuse"))
    monkeypatch.setenv("MMZOO_LOAD_PLUGINS", "")
    registry = Registry()
    assert "myfuse" not in registry.list("fusion")
    assert registry.plugins["extra"].status == "disabled"

    monkeypatch.setenv("MMZOO_LOAD_PLUGINS", "extra")
    assert "myfuse" in Registry().list("fusion")

    monkeypatch.delenv("MMZOO_LOAD_PLUGINS")
    monkeypatch.setenv("MMZOO_DISABLE_PLUGINS", "extra,fusions")
    registry = Registry()
    assert registry.list("fusion") == []
    assert registry.plugins["fusions"].status == "disabled"


def test_clean_registry_and_direct_registration():
    registry = Registry(autoload=False)
    assert registry.list("fusion") == [] and registry.list("encoder") == []

    class Plugin:
        @mmzoo.hookimpl
        def mmzoo_register(self, registry):
            registry.add_fusion("mine", "mmzoo.builtin.fusions.concat:ConcatFusion", description="x")

    info = registry.register_plugin(Plugin(), "mine-plugin")
    assert info.status == "ok" and registry.list("fusion") == ["mine"]


def test_invalid_registrations_are_plugin_errors(monkeypatch):
    monkeypatch.delenv("MMZOO_STRICT_PLUGINS", raising=False)
    registry = Registry(autoload=False)

    class Bad:
        @mmzoo.hookimpl
        def mmzoo_register(self, registry):
            registry.add_fusion("bad name", "x:y")

    with pytest.warns(PluginWarning, match="cannot register fusion 'bad name'"):
        info = registry.register_plugin(Bad(), "bad")
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
