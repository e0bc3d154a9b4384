"""Built-in plugin ``fusions``: the fusion library.

Light module: imports no torch. Each fusion lives in its own module under
:mod:`mmzoo.builtin.fusions`, imported only when a model using it is built.
``docs/fusions.md`` compares them.
"""

from mmzoo.hookspecs import hookimpl

_PKG = "mmzoo.builtin.fusions"

#: name -> (factory, one-line description)
FUSIONS = {
    "concat": (f"{_PKG}.concat:ConcatFusion",
               "early: concatenate pooled features (learned missing embeddings), then project"),
    "gated": (f"{_PKG}.gated:GatedFusion",
              "early: gated multimodal unit, per-feature softmax gates over present inputs"),
    "attention": (f"{_PKG}.attention:AttentionFusion",
                  "cross-modal: transformer over all inputs' tokens, read out by a summary token"),
    "sum": (f"{_PKG}.sum:SumFusion", "early: project to a common width, sum over present inputs"),
    "mean": (f"{_PKG}.mean:MeanFusion", "early: project to a common width, mean over present inputs"),
    "max": (f"{_PKG}.max:MaxFusion", "early: project to a common width, max over present inputs"),
    "late": (f"{_PKG}.late:LateFusion",
             "late: a classifier per input, logits averaged over present inputs"),
    "film": (f"{_PKG}.film:FiLMFusion",
             "early: one input (condition=) scales and shifts the others' features (FiLM)"),
    "bilinear": (f"{_PKG}.bilinear:BilinearFusion",
                 "early: factorised bilinear pooling (MFB), n-way product, power + L2 norm"),
    "lmf": (f"{_PKG}.lmf:LMFFusion",
            "early: low-rank multimodal fusion, rank-r factors over [z; 1]"),
    "tfn": (f"{_PKG}.tfn:TFNFusion",
            "early: tensor fusion, outer product of [z; 1] (size-capped)"),
    "cross_attn": (f"{_PKG}.cross_attn:CrossAttentionFusion",
                   "cross-modal: MulT-style, each input's tokens attend to the others' (unaligned)"),
    "perceiver": (f"{_PKG}.perceiver:PerceiverFusion",
                  "cross-modal: learned latents cross-attend to all tokens (linear cost)"),
}


@hookimpl
def mmzoo_register(registry):
    for name, (factory, description) in FUSIONS.items():
        registry.add_fusion(name, factory, description=description)
