"""A fastText-style bag of hashed n-grams (``ngram_bag``).

Joulin et al. 2016, "Bag of Tricks for Efficient Text Classification"
(hashed word n-grams, averaged embeddings, a linear classifier) with the
character n-grams of Bojanowski et al. 2017 ("Enriching Word Vectors with
Subword Information"). The processor
(:class:`mmzoo.builtin.ngram_processor.NgramProcessor`) maps a text to the
hashed ids of its word uni/bi-grams and character n-grams; this encoder
averages their embeddings:

    pooled = sum_t m_t E[x_t] / max(1, sum_t m_t)

with ``E`` a (buckets + 1, dim) table (row 0 is padding) and ``m`` the
attention mask, so padding never counts whatever id it holds. A text with no
id is a missing input (the model substitutes its missing-input embedding);
its pooled vector is 0. ``tokens`` are the per-id embeddings ``E[x_t]``
under the same mask, so the token fusions (``cross_attn``, ``perceiver``,
``attention``) can attend over n-grams. Trained from scratch, these bags
are strong on short texts and small data sets where an LSTM or a
transformer trained from scratch lags behind TF-IDF.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmzoo.components import EncoderOutput, TextEncoder
from mmzoo.errors import InputError

__all__ = ["NgramBagEncoder"]


class NgramBagEncoder(TextEncoder):
    """Mean of hashed n-gram embeddings (fastText). ``word_ngrams``: longest
    word n-gram (0: no word feature, 1: words, 2: words + bigrams);
    ``char_ngrams``: (min, max) character n-gram lengths within words, or
    None; ``buckets``: hash buckets (embedding rows); ``dim``: embedding
    width; ``max_length``: ids kept per text; ``dropout``: on the pooled
    vector while training."""

    def __init__(self, *, buckets: int = 2**18, dim: int = 32, word_ngrams: int = 2,
                 char_ngrams: tuple[int, int] | None = (2, 5), max_length: int = 1024, dropout: float = 0.0):
        super().__init__()
        from mmzoo.builtin.ngram_processor import NgramProcessor

        self.processor_settings = dict(word_ngrams=word_ngrams, char_ngrams=char_ngrams, buckets=buckets,
                                       max_length=max_length)
        NgramProcessor(**self.processor_settings)  # checks the settings before anything is allocated
        if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1):
            raise InputError(f"ngram_bag: dim must be an int >= 1, got {dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"ngram_bag: dropout must be in [0, 1), got {dropout!r}")
        self.vocab_size = buckets + 1
        self.max_length = max_length
        self.embed = nn.Embedding(self.vocab_size, dim, padding_idx=self.pad_token_id)
        nn.init.normal_(self.embed.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.embed.weight[self.pad_token_id].zero_()
        self.dropout = nn.Dropout(dropout)
        self.num_features = self.token_features = dim

    def build_processor(self):
        from mmzoo.builtin.ngram_processor import NgramProcessor

        return NgramProcessor(**self.processor_settings)

    def forward(self, x: dict[str, Tensor]) -> EncoderOutput:
        ids, mask = x["input_ids"], x["attention_mask"]
        if not torch.compiler.is_compiling() and ids.numel() and (  # the range check is a host sync
                int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise InputError(f"n-gram ids must be in [0, {self.vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]; use the model's processor "
                             "(built with the same buckets)")
        tokens = self.embed(ids)
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return EncoderOutput(self.dropout(pooled), tokens, mask)
