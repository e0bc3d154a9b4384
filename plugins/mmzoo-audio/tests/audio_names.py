"""Small encoder names shared by the mmzoo-audio tests (so the suite stays fast)."""

TINY_AUDIO = "audio_cnn(width=4,depth=2,n_mels=16,clip_seconds=0.25)"
TINY_TEXT = "lstm(vocab_size=300,embed_dim=8,hidden_size=8)"
