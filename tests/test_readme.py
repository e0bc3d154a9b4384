"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    if "mmzoo_register" in namespace:  # the plugin sketch: its lazy factories register fine
        import types

        from mmzoo.registry import Registry

        registry = Registry(autoload=False)
        plugin = types.SimpleNamespace(mmzoo_register=namespace["mmzoo_register"])
        assert registry.register_plugin(plugin, "readme").status == "ok"
        assert registry.plugins["readme"].components
