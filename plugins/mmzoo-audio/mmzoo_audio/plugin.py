"""The ``audio`` plugin (entry point ``audio`` in group ``mmzoo``).

A light module: it only names factories as ``"module:attr"`` strings, so
discovering the plugin imports no torch.
"""

from mmzoo.hookspecs import hookimpl


@hookimpl
def mmzoo_register(registry):
    registry.add_encoder(
        "audio_cnn", "mmzoo_audio.encoders:AudioCNN", modality="audio",
        description="small CNN over log-mel spectrograms (torch.stft + mel filterbank, no torchaudio)",
    )
    registry.add_encoder(
        "audio_timm", "mmzoo_audio.encoders:AudioTimm", modality="audio",
        description="a timm image backbone (model='resnet18') applied to the log-mel spectrogram",
    )
    registry.add_task(
        "fsdd-digits", "mmzoo_audio.tasks:FSDDDigits",
        description="AV-MNIST style: FSDD spoken digit + scikit-learn digit image of the same label",
    )
