"""Text encoders trained from scratch: LSTM, GRU and a small transformer.

They take token ids padded on the right with id 0 (see
:class:`mmzoo.components.TextEncoder`) and come with a tokenizer from the
``tokenizers`` library that needs no download (see
:class:`mmzoo.processing.ScratchTextProcessor`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmzoo.builtin.layers import transformer_blocks
from mmzoo.components import EncoderOutput, TextEncoder, check_int, check_params
from mmzoo.errors import InputError


class _ScratchText(TextEncoder):
    vocab_size: int

    def build_processor(self):
        from mmzoo.processing import ScratchTextProcessor

        return ScratchTextProcessor(vocab_size=self.vocab_size, max_length=self.max_length)

    def _check_ids(self, ids: Tensor) -> None:
        if torch.compiler.is_compiling():  # reading the range is a host sync, a graph break
            return
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise InputError(
                f"token ids must be in [0, {self.vocab_size}), got range "
                f"[{int(ids.min())}, {int(ids.max())}]; raise vocab_size or re-tokenize"
            )


class _RNNEncoder(_ScratchText):
    """Embedding -> packed RNN. pooled = last layer's final hidden state (both
    directions concatenated); tokens = per-step outputs, masked by length."""

    rnn_class: type[nn.RNNBase]

    def __init__(self, *, vocab_size: int = 8192, embed_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 max_length: int = 128):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_length = max_length
        check_params(f"{self.rnn_class.__name__.lower()}(num_layers={num_layers!r})",
                     _rnn_params(self.rnn_class, embed_dim, hidden_size, num_layers, bidirectional))
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=self.pad_token_id)
        self.rnn = self.rnn_class(embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                                  bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.num_features = self.token_features = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: dict[str, Tensor]) -> EncoderOutput:
        ids, mask = x["input_ids"], x["attention_mask"]
        self._check_ids(ids)
        # pack_padded_sequence rejects length 0: an empty text runs as one pad
        # token; the model marks it missing so its value is never used.
        lengths = mask.sum(1).clamp(min=1)
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # LSTM: (h, c)
            hidden = hidden[0]
        directions = 2 if self.rnn.bidirectional else 1
        pooled = hidden[-directions:].transpose(0, 1).reshape(ids.shape[0], -1)
        tokens, _ = pad_packed_sequence(output, batch_first=True)
        steps = torch.arange(tokens.shape[1], device=ids.device)
        token_mask = (steps[None, :] < lengths[:, None]) & mask.any(1, keepdim=True)
        return EncoderOutput(pooled, tokens, token_mask)


def _rnn_params(rnn_class: type[nn.RNNBase], embed_dim: int, hidden_size: int, num_layers: int,
                bidirectional: bool) -> int:
    """Parameters of ``rnn_class(...)``, known before it is built."""
    gates = {nn.LSTM: 4, nn.GRU: 3}[rnn_class]
    directions = 2 if bidirectional else 1
    total, width = 0, embed_dim
    for _ in range(max(num_layers, 0) if isinstance(num_layers, int) else 0):
        total += directions * gates * hidden_size * (width + hidden_size + 2)
        width = hidden_size * directions
        if total > 1e18:  # past any limit: no need to count on
            break
    return total


class LSTMEncoder(_RNNEncoder):
    rnn_class = nn.LSTM


class GRUEncoder(_RNNEncoder):
    rnn_class = nn.GRU


class TransformerTextEncoder(_ScratchText):
    """Token + learned position embeddings, a CLS token, ``depth`` pre-norm
    blocks. The CLS token is always a valid key, so no query is ever fully
    masked. pooled = CLS output (``pooling='cls'``) or the masked token mean."""

    def __init__(self, *, vocab_size: int = 8192, dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, max_length: int = 128,
                 pooling: str = "cls"):
        super().__init__()
        check_int("transformer", "dim", dim)
        check_int("transformer", "heads", heads)
        if dim % heads:
            raise InputError(f"transformer: dim={dim} must be divisible by heads={heads}")
        if pooling not in ("cls", "mean"):
            raise InputError(f"transformer: pooling must be 'cls' or 'mean', got {pooling!r}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.pooling = pooling
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=self.pad_token_id)
        self.position = nn.Parameter(torch.zeros(1, max_length + 1, dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = transformer_blocks("transformer", depth, dim, heads, mlp_ratio=mlp_ratio,
                                         dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.num_features = self.token_features = dim

    def forward(self, x: dict[str, Tensor]) -> EncoderOutput:
        ids, mask = x["input_ids"], x["attention_mask"]
        self._check_ids(ids)
        if ids.shape[1] > self.max_length:
            raise InputError(f"text of {ids.shape[1]} tokens exceeds max_length={self.max_length}; "
                             "truncate it or build the encoder with a larger max_length")
        b, t = ids.shape
        h = torch.cat([self.cls.expand(b, -1, -1), self.embed(ids)], 1) + self.position[:, : t + 1]
        key_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=ids.device), mask], 1)
        for block in self.blocks:
            h = block(h, key_mask)
        h = self.norm(h)
        tokens = h[:, 1:]
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return EncoderOutput(pooled, tokens, mask)
