"""The built-in encoders a plugin may build on: subclass or wrap them.

``mmzoo.builtin`` is private (its modules move as the library grows); these
names are the stable, public way to reach its encoders. Importing this module
imports torch.
"""

from mmzoo.builtin.image import ImageEncoder, SmallCNN, TimmEncoder
from mmzoo.builtin.ngram import NgramBagEncoder
from mmzoo.builtin.text import GRUEncoder, LSTMEncoder, TransformerTextEncoder

__all__ = ["ImageEncoder", "TimmEncoder", "SmallCNN", "LSTMEncoder", "GRUEncoder", "TransformerTextEncoder",
           "NgramBagEncoder"]
