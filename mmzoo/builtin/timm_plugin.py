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
    registry.add_model("survey", "cnn+lstm/concat",
                       description="the survey's model: CNN image branch + LSTM text branch, concatenated")
