"""Built-in plugin ``text``: text encoders trained from scratch (LSTM, GRU, transformer, n-gram bag)."""

from mmzoo.hookspecs import hookimpl


@hookimpl
def mmzoo_register(registry):
    registry.add_encoder("lstm", "mmzoo.builtin.text:LSTMEncoder", modality="text",
                         description="LSTM over token embeddings (packed, padding never leaks)")
    registry.add_encoder("gru", "mmzoo.builtin.text:GRUEncoder", modality="text",
                         description="GRU over token embeddings (packed, padding never leaks)")
    registry.add_encoder("transformer", "mmzoo.builtin.text:TransformerTextEncoder", modality="text",
                         description="small transformer with a CLS token (scaled_dot_product_attention)")
    registry.add_encoder("ngram_bag", "mmzoo.builtin.ngram:NgramBagEncoder", modality="text",
                         description="fastText: mean of hashed word and character n-gram embeddings "
                                     "(Joulin et al. 2016; Bojanowski et al. 2017)")
