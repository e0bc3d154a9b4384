"""`mmzoo plugins`: every plugin with its distribution, status, components,
load time and heavy imports (fake plugins installed as real distributions)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest


def _dist(root, dist, entry_name, module, body):
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-2.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 2.0.1\n")
    (info / "entry_points.txt").write_text(f"[mmzoo]\n{entry_name} = {module}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    _dist(root, "broken-plugin", "broken", "cli_broken_plugin", "raise ImportError('needs libfoo')\n")
    _dist(root, "heavy-plugin", "heavy", "cli_heavy_plugin", """
        import tokenizers  # a heavy module, imported at discovery time (bad practice)
        import mmzoo

        @mmzoo.hookimpl
        def mmzoo_register(registry):
            registry.add_fusion("heavy_concat", "mmzoo.builtin.fusions.concat:ConcatFusion")
    """)
    return root


def run_cli(site, *args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MMZOO_")}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(site), environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "mmzoo.cli", "plugins", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


def test_table(site):
    result = run_cli(site)
    assert result.returncode == 1, result.stderr  # a plugin is broken
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PLUGIN", "DISTRIBUTION", "STATUS", "LOAD", "HEAVY", "IMPORTS", "COMPONENTS"]
    row = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(" ")}
    assert "mmzoo 0.1.0 (built-in)" in row["timm"] and "encoder:cnn" in row["timm"]
    assert "mmzoo-audio" in row["audio"] and "encoder:audio_cnn" in row["audio"]
    assert " ok " in row["audio"] and " ms " in row["audio"]
    assert "broken-plugin 2.0.1" in row["broken"] and " error " in row["broken"]
    assert "needs libfoo" in result.stdout
    assert "tokenizers" in row["heavy"] and "fusion:heavy_concat" in row["heavy"]
    assert "pulled in heavy modules" in result.stdout
    assert re.search(r"\(\+\d+ more; --all lists them\)", row["fusions"])


def test_json_all_and_disabled(site):
    result = run_cli(site, "--json", MMZOO_DISABLE_PLUGINS="broken", MMZOO_STRICT_PLUGINS="1")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["broken"]["status"] == "disabled"
    assert plugins["heavy"]["heavy_imports"] == ["tokenizers"]
    audio = plugins["audio"]
    assert (audio["distribution"], audio["status"], audio["builtin"]) == ("mmzoo-audio", "ok", False)
    assert audio["components"] == ["encoder:audio_cnn", "encoder:audio_timm", "task:fsdd-digits"]
    assert audio["heavy_imports"] == [] and audio["load_seconds"] >= 0
    assert plugins["fusions"]["builtin"] is True and len(plugins["fusions"]["components"]) >= 13

    everything = run_cli(site, "--all", MMZOO_DISABLE_PLUGINS="broken")
    assert "fusion:perceiver" in everything.stdout and "module: mmzoo_audio.plugin" in everything.stdout


def test_strict_mode_still_lists(site):
    result = run_cli(site, MMZOO_STRICT_PLUGINS="1")
    assert result.returncode == 1 and "needs libfoo" in result.stdout


def test_distributions_come_from_pluggys_distinfo(site):
    """Entry points are loaded through pluggy, so its list_plugin_distinfo names each
    plugin's distribution; PluginInfo (and so `mmzoo plugins`) reports that."""
    script = textwrap.dedent("""
        import json
        from mmzoo.plugins import discover, plugin_manager
        registry = discover()
        manager = plugin_manager(registry)
        distinfo = {manager.get_name(p): [d.project_name, d.version] for p, d in manager.list_plugin_distinfo()}
        info = {n: [i.distribution, i.version, i.builtin] for n, i in registry.plugins.items()}
        print(json.dumps({"distinfo": distinfo, "info": info}))
    """)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MMZOO_")}
    environ.update(PYTHONPATH=os.pathsep.join([str(site), environ.get("PYTHONPATH", "")]),
                   MMZOO_DISABLE_PLUGINS="broken")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["distinfo"]["heavy"] == ["heavy-plugin", "2.0.1"]
    assert found["distinfo"]["audio"][0] == "mmzoo-audio"
    for name, (dist, version) in found["distinfo"].items():
        assert found["info"][name][:2] == [dist, version]
    assert "broken" not in found["distinfo"] and found["info"]["broken"][:2] == ["broken-plugin", "2.0.1"]
    import mmzoo

    assert found["info"]["timm"] == ["mmzoo", mmzoo.__version__, True]  # built-ins
