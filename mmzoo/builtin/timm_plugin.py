"""Built-in plugin ``timm``: every timm model as an image encoder, plus a small CNN."""

from mmzoo.hookspecs import hookimpl


@hookimpl
def mmzoo_register(registry):
    registry.add_resolver(
        "timm",
        "mmzoo.builtin.image:resolve_timm",
        modality="image",
        lister="mmzoo.builtin.image:list_timm",
        default=True,
        description="any timm model by name (num_classes=0; unpooled features become tokens)",
    )
    registry.add_alias("resnet", "resnet18")
    registry.add_encoder("cnn", "mmzoo.builtin.image:SmallCNN", modality="image",
                         description="small plain CNN (the survey's image branch)")
    registry.add_model("survey", "cnn(channels=(64,))+lstm(embed_dim=64,hidden_size=64)/concat(dim=0)",
                       description="the survey's model: a Conv2D(64) image branch and an LSTM(64) text "
                                   "branch, concatenated, then a softmax classifier")
