"""The README's Python examples run as written, and print what their comments
promise.

A trailing comment that is a bracketed Python display (``# (2, 10)``,
``# ('image', 'text')``, ``# ['gru', 'lstm']``, ``# {'pooling': 'mean'}``,
``# (2, model.num_features)``) is a promise about the line's value: a tensor's
shape, or the value itself (a list ending in ``...`` promises its first
items). Other comments are prose and are not checked.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
_DISPLAYS = (ast.Tuple, ast.List, ast.Dict, ast.Set)


def _promises(source: str) -> dict[int, str]:
    """Line number -> the comment's text, for comments that are displays."""
    out = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        text = token.string[1:].strip()
        if text[:1] not in "([{" or not text:  # "pairs, sorted" is prose, though it parses as a tuple
            continue
        try:
            node = ast.parse(text, mode="eval").body
        except SyntaxError:
            continue
        if isinstance(node, _DISPLAYS):
            out[token.start[0]] = text
    return out


def _check(value, promised, where: str) -> None:
    if hasattr(value, "shape") and isinstance(promised, tuple):
        assert tuple(value.shape) == promised, f"{where}: shape {tuple(value.shape)}, README says {promised}"
    elif isinstance(promised, list) and promised and promised[-1] is Ellipsis:
        head = promised[:-1]
        assert list(value)[:len(head)] == head, f"{where}: {list(value)[:len(head) + 2]}, README says {promised}"
    elif isinstance(promised, dict):
        assert dict(value) == promised, f"{where}: {dict(value)}, README says {promised}"
    else:
        assert value == promised, f"{where}: {value!r}, README says {promised!r}"


def _run(source: str, name: str, namespace: dict) -> int:
    """Execute ``source`` statement by statement, checking every promise;
    returns how many were checked."""
    promises = _promises(source)
    checked = 0
    for statement in ast.parse(source).body:
        module = ast.Module([statement], type_ignores=[])
        line = statement.end_lineno
        if isinstance(statement, ast.Expr):
            value = eval(compile(ast.Expression(statement.value), name, "eval"), namespace)
        else:
            exec(compile(module, name, "exec"), namespace)
            targets = getattr(statement, "targets", [])
            value = namespace[targets[0].id] if len(targets) == 1 and isinstance(targets[0], ast.Name) else None
        if line in promises:
            assert value is not None, f"{name} line {line}: a promise on a statement without a value"
            promised = eval(promises[line], namespace)
            _check(value, promised, f"{name} line {line}")
            checked += 1
    return checked


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_promises_are_found_and_checked():
    """The checker itself: a wrong promise fails, prose is ignored."""
    namespace: dict = {}
    assert _run("x = [3, 1, 2]  # [3, 1, ...]\ny = (1, 2)  # pairs, sorted\nlen(x)  # 3 items\n", "t", namespace) == 1
    with pytest.raises(AssertionError, match="README says"):
        _run("x = [3, 1, 2]  # [1, ...]\n", "t", {})
    with pytest.raises(AssertionError, match="shape"):
        _run("import torch\nt = torch.zeros(2, 3)  # (2, 4)\n", "t", {})


def test_readme_makes_promises():
    assert sum(len(_promises(block)) for block in BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    checked = _run(BLOCKS[index], f"README.md block {index}", namespace)
    assert checked == len(_promises(BLOCKS[index]))
    if "mmzoo_register" in namespace:  # the plugin sketch: its lazy factories register fine
        import types

        from mmzoo.plugins import register_plugin
        from mmzoo.registry import Registry

        registry = Registry()
        plugin = types.ModuleType("readme")
        plugin.mmzoo_register = namespace["mmzoo_register"]
        assert register_plugin(registry, plugin, "readme").status == "ok"
        assert registry.plugins["readme"].components
