"""The n-gram processor: strings -> hashed ids of word and character n-grams.

fastText's features (Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification": word n-grams through the hashing trick; Bojanowski et al.
2017, "Enriching Word Vectors with Subword Information": character n-grams
of each word between the boundary markers ``<`` and ``>``). A text is
normalised (NFKC, lower case) and split into words (runs of word characters,
and each punctuation mark on its own). For word ``i`` it emits, in this
order, the ids of

- the word itself (``word_ngrams >= 1``),
- the word n-grams ending at it, ``words[i-n+1..i]`` for ``n = 2..word_ngrams``,
- the character n-grams of ``"<" + word + ">"`` with lengths
  ``char_ngrams = (min, max)`` (``None``: none),

so that truncating to ``max_length`` ids keeps the start of the text.

Each feature is hashed with CRC-32 (``zlib.crc32``: the same value in every
process and on every platform, unlike Python's salted ``hash()``) over its
UTF-8 bytes behind a one-byte kind tag (word / word n-gram / character
n-gram, so that the word ``ab`` and the character n-gram ``ab`` do not share
a bucket by construction), then mapped to ``1 + crc % buckets``; id 0 is
padding. Nothing is fitted; the saved file records the settings, and a
processor refuses files written with other settings.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from mmzoo._io import read_json, write_json
from mmzoo.components import InputProcessor
from mmzoo.errors import InputError, WeightsError

__all__ = ["NgramProcessor", "FILE_NAME", "HASH"]

FILE_NAME = "ngram.json"
#: names the feature hashing scheme in the saved file (a changed scheme must not load silently)
HASH = "crc32-v1"
_WORD, _WORD_NGRAM, _CHAR_NGRAM = b"\x01", b"\x02", b"\x03"
_WORDS = re.compile(r"\w+|[^\w\s]")


def _check_settings(word_ngrams: Any, char_ngrams: Any, buckets: Any, max_length: Any) -> tuple:
    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not (isinstance(word_ngrams, int) and not isinstance(word_ngrams, bool) and word_ngrams >= 0):
        raise InputError(f"ngram: word_ngrams must be an int >= 0 (1: words, 2: words + bigrams), "
                         f"got {word_ngrams!r}")
    if char_ngrams is not None:
        if not (isinstance(char_ngrams, (tuple, list)) and len(char_ngrams) == 2
                and all(map(positive_int, char_ngrams)) and char_ngrams[0] <= char_ngrams[1]):
            raise InputError(f"ngram: char_ngrams must be None or (min, max) with 1 <= min <= max, "
                             f"got {char_ngrams!r}")
        char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
    if word_ngrams == 0 and char_ngrams is None:
        raise InputError("ngram: word_ngrams=0 and char_ngrams=None leave no feature; enable one of them")
    if not positive_int(buckets) or buckets >= 2**32:
        raise InputError(f"ngram: buckets must be an int in [1, 2**32), got {buckets!r}")
    if not positive_int(max_length):
        raise InputError(f"ngram: max_length must be an int >= 1, got {max_length!r}")
    return word_ngrams, char_ngrams, buckets, max_length


class NgramProcessor(InputProcessor):
    """Strings -> ``{"input_ids": (B, T) long, "attention_mask": (B, T) bool}``
    of hashed n-gram ids in ``[1, buckets]``, padded with 0 on the right
    (T: the longest text of the batch, at most ``max_length``). An empty text
    (or one of whitespace only) has no id, so the model treats it as missing.
    """

    def __init__(self, *, word_ngrams: int = 2, char_ngrams: tuple[int, int] | None = (2, 5),
                 buckets: int = 2**18, max_length: int = 1024):
        self.word_ngrams, self.char_ngrams, self.buckets, self.max_length = _check_settings(
            word_ngrams, char_ngrams, buckets, max_length)
        self._char_cache: dict[str, list[int]] = {}

    def settings(self) -> dict[str, Any]:
        return {"hash": HASH, "word_ngrams": self.word_ngrams,
                "char_ngrams": list(self.char_ngrams) if self.char_ngrams else None,
                "buckets": self.buckets, "max_length": self.max_length}

    def _id(self, kind: bytes, feature: str) -> int:
        return 1 + zlib.crc32(kind + feature.encode("utf-8", "surrogatepass")) % self.buckets

    def _char_ids(self, word: str) -> list[int]:
        ids = self._char_cache.get(word)
        if ids is None:
            low, high = self.char_ngrams
            marked = f"<{word}>"
            ids = [self._id(_CHAR_NGRAM, marked[i:i + n]) for n in range(low, high + 1)
                   for i in range(len(marked) - n + 1)]
            if len(self._char_cache) < 200_000:  # words repeat: hash each one's n-grams once
                self._char_cache[word] = ids
        return ids

    def words(self, text: str) -> list[str]:
        """The words of ``text`` as the processor sees them."""
        return _WORDS.findall(unicodedata.normalize("NFKC", text).lower())

    def ids(self, text: str) -> list[int]:
        """The n-gram ids of one text (at most ``max_length``)."""
        words = self.words(text)
        out: list[int] = []
        for i, word in enumerate(words):
            if self.word_ngrams >= 1:
                out.append(self._id(_WORD, word))
            for n in range(2, min(self.word_ngrams, i + 1) + 1):
                out.append(self._id(_WORD_NGRAM, "\x00".join(words[i - n + 1:i + 1])))
            if self.char_ngrams:
                out.extend(self._char_ids(word))
            if len(out) >= self.max_length:
                return out[:self.max_length]
        return out

    def __call__(self, values: Sequence[str]) -> dict[str, Tensor]:
        from mmzoo.processing import as_texts

        rows = [self.ids(v) for v in as_texts(values)]
        length = max((len(r) for r in rows), default=0)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": ids != 0}

    def save(self, directory: Path) -> None:
        write_json(directory / FILE_NAME, self.settings())

    def load(self, directory: Path) -> None:
        path = directory / FILE_NAME
        saved = read_json(path)
        if saved != self.settings():
            raise WeightsError(f"{path} records n-gram settings {saved!r:.300}, but the encoder was built "
                               f"with {self.settings()!r}: the file belongs to another model; restore it "
                               "or re-save the model")
