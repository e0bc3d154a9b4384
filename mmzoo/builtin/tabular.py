"""Tabular encoders: ``tab_mlp`` and ``ft_transformer`` (modality ``tabular``).

Both take the output of :class:`~mmzoo.builtin.tabular_processor.TabularProcessor`
(standardised numeric cells with a missing flag, categorical ids). Their
per-column parameters depend on the table's columns, which are known once
the processor is fitted on the training split: fitting calls
:meth:`TabularEncoder.set_schema`, which builds them. The schema is part of
the saved config (:meth:`~mmzoo.components.Encoder.reload_kwargs`), so a
saved model is rebuilt with the right shapes before its weights load.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.layers import TransformerBlock
from mmzoo.builtin.tabular_processor import MISSING_ID, TabularProcessor
from mmzoo.components import Encoder, EncoderOutput
from mmzoo.errors import InputError

__all__ = ["ColumnEmbedding", "TabularEncoder", "TabMLPEncoder", "FTTransformerEncoder"]

KEYS = ("numeric", "numeric_missing", "categorical")


def _normalise_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    try:
        numeric = [str(n) for n in schema.get("numeric", [])]
        categorical = [[str(n), int(k)] for n, k in schema.get("categorical", [])]
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"a tabular schema is {{'numeric': [names], 'categorical': [[name, vocabulary "
                         f"size], ...]}}, got {schema!r:.200}") from exc
    if not numeric and not categorical:
        raise InputError("a tabular schema needs at least one column")
    if any(k < 0 for _, k in categorical):
        raise InputError(f"vocabulary sizes must be >= 0, got {categorical}")
    return {"numeric": numeric, "categorical": categorical}


class ColumnEmbedding(nn.Module):
    """One ``dim``-vector per column (Gorishniy et al. 2021's feature tokenizer):

    numeric ``j``: ``t_j = b_j + x_j w_j``, or ``b_j + m_j`` when the cell is missing;
    categorical ``j``: ``t_j = b_j + E_j[id]`` with ids 0 = missing, 1 = unseen, 2.. vocabulary.
    """

    def __init__(self, schema: Mapping[str, Any], dim: int):
        super().__init__()
        self.num_numeric = len(schema["numeric"])
        sizes = [k + 2 for _, k in schema["categorical"]]  # + missing, unseen
        self.weight = nn.Parameter(torch.empty(self.num_numeric, dim))
        self.missing = nn.Parameter(torch.empty(self.num_numeric, dim))
        self.bias = nn.Parameter(torch.zeros(self.num_numeric + len(sizes), dim))
        self.embed = nn.Embedding(max(sum(sizes), 1), dim)
        offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0)
        self.register_buffer("offsets", offsets.long(), persistent=False)
        self.sizes = sizes
        for p in (self.weight, self.missing, self.embed.weight):
            nn.init.trunc_normal_(p, std=0.02 if p is not self.weight else 1.0 / dim ** 0.5)

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        numeric = x["numeric"].unsqueeze(-1) * self.weight
        numeric = torch.where(x["numeric_missing"].unsqueeze(-1), self.missing.expand_as(numeric), numeric)
        categorical = self.embed(x["categorical"] + self.offsets)
        return torch.cat([numeric, categorical], 1) + self.bias


class TabularEncoder(Encoder):
    """Base of tabular encoders: input checks, the processor, the schema.

    Subclasses implement :meth:`_build` (the per-column parameters for a
    schema) and :meth:`forward`.
    """

    modality = "tabular"
    #: the columns come from the fitted processor and are restored through
    #: reload_kwargs, so they stay out of the canonical name (like hf_config)
    weight_kwargs = ("schema",)

    def __init__(self, *, max_categories: int = 256, schema: Mapping[str, Any] | None = None):
        super().__init__()
        self.max_categories = int(max_categories)
        self.schema: dict[str, Any] | None = None
        self._pending_schema = schema

    def _finish_init(self) -> None:
        """Call at the end of a subclass ``__init__``: builds a schema given as a kwarg (reload)."""
        if self._pending_schema is not None:
            self.set_schema(self._pending_schema)
        del self._pending_schema

    def set_schema(self, schema: Mapping[str, Any]) -> None:
        """(Re)build the per-column parameters for ``schema``; a no-op when it is unchanged."""
        schema = _normalise_schema(schema)
        if schema == self.schema:
            return
        device = next(self.parameters(), torch.zeros(0)).device  # tab_mlp has none before its columns
        self._build(schema)
        self.to(device)
        self.schema = schema

    def _build(self, schema: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reload_kwargs(self) -> dict[str, Any]:
        return {"schema": self.schema} if self.schema is not None else {}

    def build_processor(self) -> TabularProcessor:
        return TabularProcessor(max_categories=self.max_categories, on_fit=self.set_schema)

    def prepare_input(self, x: Any, slot: str) -> tuple[dict[str, Tensor], Tensor]:
        if self.schema is None:
            raise InputError(f"input {slot!r} (tabular): the encoder has no columns yet; fit its processor "
                             "on the training rows first (model.processor.fit(train_split))")
        if not isinstance(x, Mapping) or any(k not in x for k in KEYS):
            raise InputError(f"input {slot!r} (tabular) must be a mapping with {list(KEYS)}; use "
                             f"model.processor({slot}=[rows]) to convert rows")
        numeric, missing, categorical = (x[k] for k in KEYS)
        n_num, n_cat = len(self.schema["numeric"]), len(self.schema["categorical"])
        batch = numeric.shape[0] if isinstance(numeric, Tensor) and numeric.dim() == 2 else -1
        expected = {"numeric": (batch, n_num), "numeric_missing": (batch, n_num), "categorical": (batch, n_cat)}
        for key, shape in expected.items():
            if not isinstance(x[key], Tensor) or tuple(x[key].shape) != shape:
                got = tuple(x[key].shape) if isinstance(x[key], Tensor) else type(x[key]).__name__
                raise InputError(f"input {slot!r} (tabular): {key!r} must be a tensor of shape "
                                 f"(batch, {shape[1]}) for columns {self.schema}, got {got}")
        if not numeric.is_floating_point() or categorical.is_floating_point():
            raise InputError(f"input {slot!r} (tabular): 'numeric' must be float and 'categorical' integer "
                             f"ids, got {numeric.dtype} and {categorical.dtype}")
        limits = torch.tensor([k + 2 for _, k in self.schema["categorical"]], device=categorical.device)
        if categorical.numel() and ((categorical < 0) | (categorical >= limits)).any():
            raise InputError(f"input {slot!r} (tabular): categorical ids out of range for vocabulary sizes "
                             f"{[k for _, k in self.schema['categorical']]} (+2 for missing and unseen)")
        missing = missing.bool()
        present = (~missing).any(1) | (categorical != MISSING_ID).any(1)
        return {"numeric": numeric, "numeric_missing": missing, "categorical": categorical.long()}, present

    def batch_size(self, x: Any) -> int:
        return x["numeric"].shape[0]

    def example_input(self, batch: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A random valid batch for the schema (the conformance kit's input): some
        numeric cells missing, some categories missing or unseen."""
        if self.schema is None:
            raise InputError("example_input needs the columns: build the encoder with schema=...")
        n_num = len(self.schema["numeric"])
        numeric = torch.randn(batch, n_num, generator=generator)
        missing = torch.rand(batch, n_num, generator=generator) < 0.25
        ids = [torch.randint(0, k + 2, (batch, 1), generator=generator) for _, k in self.schema["categorical"]]
        categorical = torch.cat(ids, 1) if ids else torch.zeros(batch, 0, dtype=torch.long)
        return {"numeric": numeric.masked_fill(missing, 0.0), "numeric_missing": missing, "categorical": categorical}


class TabMLPEncoder(TabularEncoder):
    """An MLP over column embeddings (a ``embed_dim``-vector per column, see
    :class:`ColumnEmbedding`, concatenated): ``depth`` x (Linear -> GELU ->
    Dropout). pooled = the last hidden layer; no tokens."""

    def __init__(self, *, hidden: int = 128, depth: int = 2, embed_dim: int = 8, dropout: float = 0.1,
                 max_categories: int = 256, schema: Mapping[str, Any] | None = None):
        super().__init__(max_categories=max_categories, schema=schema)
        if depth < 1:
            raise InputError(f"tab_mlp needs depth >= 1, got {depth}")
        self.hidden, self.depth, self.embed_dim, self.dropout = hidden, depth, embed_dim, dropout
        self.num_features = hidden
        self.columns: ColumnEmbedding | None = None
        self.mlp: nn.Sequential | None = None
        self._finish_init()

    def _build(self, schema: dict[str, Any]) -> None:
        self.columns = ColumnEmbedding(schema, self.embed_dim)
        width = (len(schema["numeric"]) + len(schema["categorical"])) * self.embed_dim
        layers: list[nn.Module] = []
        for _ in range(self.depth):
            layers += [nn.Linear(width, self.hidden), nn.GELU(), nn.Dropout(self.dropout)]
            width = self.hidden
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Mapping[str, Tensor]) -> EncoderOutput:
        return EncoderOutput(self.mlp(self.columns(x).flatten(1)))


class FTTransformerEncoder(TabularEncoder):
    """FT-Transformer (Gorishniy et al. 2021): one token per column
    (:class:`ColumnEmbedding`) plus a CLS token, ``depth`` pre-norm
    transformer blocks. pooled = the CLS output; tokens = the column tokens,
    so the token fusions (``cross_attn``, ``perceiver``, ``attention``)
    attend over columns."""

    def __init__(self, *, dim: int = 64, depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0,
                 dropout: float = 0.1, max_categories: int = 256, schema: Mapping[str, Any] | None = None):
        super().__init__(max_categories=max_categories, schema=schema)
        if dim % heads:
            raise InputError(f"ft_transformer: dim={dim} must be divisible by heads={heads}")
        self.dim = dim
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.num_features = self.token_features = dim
        self.columns: ColumnEmbedding | None = None
        self._finish_init()

    def _build(self, schema: dict[str, Any]) -> None:
        self.columns = ColumnEmbedding(schema, self.dim)

    def forward(self, x: Mapping[str, Tensor]) -> EncoderOutput:
        tokens = self.columns(x)
        b = tokens.shape[0]
        h = torch.cat([self.cls.expand(b, -1, -1), tokens], 1)
        key_mask = torch.ones(b, h.shape[1], dtype=torch.bool, device=h.device)
        for block in self.blocks:
            h = block(h, key_mask)
        h = self.norm(h)
        return EncoderOutput(h[:, 0], h[:, 1:])
