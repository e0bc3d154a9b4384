"""The plugin author guide in CONTRIBUTING.md runs as written: its example
plugin is written to a temporary folder, installed with pip (offline, into a
--target folder, never into this environment), discovered through its entry
point, used by name, and its own tests pass."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILE_BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```", re.S | re.M)


def guide_files() -> dict[str, str]:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    return {path: body for path, body in FILE_BLOCK.findall(text)}


def test_guide_has_the_example_files():
    files = guide_files()
    assert set(files) == {
        "mmzoo-tabular/pyproject.toml", "mmzoo-tabular/mmzoo_tabular/__init__.py",
        "mmzoo-tabular/mmzoo_tabular/plugin.py", "mmzoo-tabular/mmzoo_tabular/encoders.py",
        "mmzoo-tabular/tests/test_tabular.py", "try_it.py",
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example written out and pip-installed into a --target folder."""
    root = tmp_path_factory.mktemp("guide")
    for path, body in guide_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body, encoding="utf-8")
    site = root / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(root / "mmzoo-tabular")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMZOO_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(site), env.get("PYTHONPATH", "")] if p)
    env["MMZOO_STRICT_PLUGINS"] = "1"
    return root, env


def run(args, cwd, env):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_example_plugin_is_discovered(installed):
    root, env = installed
    result = run(["-m", "mmzoo.cli", "plugins", "--json"], root, env)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    tabular = plugins["tabular"]
    assert (tabular["distribution"], tabular["version"], tabular["status"]) == ("mmzoo-tabular", "0.1.0", "ok")
    assert tabular["components"] == ["encoder:tabular_mlp"] and tabular["heavy_imports"] == []


def test_example_is_used_by_name(installed):
    root, env = installed
    result = run(["try_it.py"], root, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['tabular_mlp']", "('tabular', 'text') (4, 3)", "mmzoo-tabular"]


def test_example_tests_pass(installed):
    root, env = installed
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root / "mmzoo-tabular"),
                  str(root / "mmzoo-tabular/tests")], root / "mmzoo-tabular", env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout
