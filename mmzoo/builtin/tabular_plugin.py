"""Built-in plugin ``tables``: encoders for table rows (modality ``tabular``).

Named ``tables``, not ``tabular``, so that it never clashes with a third-party
``tabular`` plugin (the plugin guide's example is one)."""

from mmzoo.hookspecs import hookimpl

_MOD = "mmzoo.builtin.tabular"


@hookimpl
def mmzoo_register(registry):
    registry.add_encoder("tab_mlp", f"{_MOD}:TabMLPEncoder", modality="tabular",
                         description="MLP over per-column embeddings (standardised numbers, categories; "
                                     "learned missing/unseen embeddings)")
    registry.add_encoder("ft_transformer", f"{_MOD}:FTTransformerEncoder", modality="tabular",
                         description="FT-Transformer: one token per column + CLS (Gorishniy et al. 2021); "
                                     "column tokens for the token fusions")
