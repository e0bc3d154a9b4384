"""What does mmzoo's assembly cost?

1. Forward+backward of ``resnet18+lstm/concat`` built by ``mmzoo.create`` vs
   the same architecture written by hand in plain PyTorch (timm resnet18,
   nn.Embedding + packed nn.LSTM, concat -> Linear(640, 256) -> Linear(256, C)),
   interleaved in one run, printed as a ratio of medians.
2. ``mmzoo.load(dir)`` vs building the model (``mmzoo.create``) plus
   ``safetensors.torch.load_file`` + ``load_state_dict``.

    python benchmarks/overhead.py [--device cuda] [--image-size 224] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import mmzoo
from mmzoo.train import synchronize

NAME = "resnet18+lstm/concat"


class HandWritten(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int = 8192, embed_dim: int = 128, hidden: int = 128):
        super().__init__()
        import timm

        self.image = timm.create_model("resnet18", pretrained=False, num_classes=0)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.proj = nn.Linear(self.image.num_features + hidden, 256)
        self.head = nn.Sequential(nn.Dropout(0.0), nn.Linear(256, num_classes))

    def forward(self, image, input_ids, attention_mask):
        pooled_image = self.image(image)
        lengths = attention_mask.sum(1).clamp(min=1)
        packed = pack_padded_sequence(self.embed(input_ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(self.proj(torch.cat([pooled_image, h[-1]], -1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 on GPU, 64 on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on GPU, 8 on CPU")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.image_size or (224 if device.type == "cuda" else 64)
    batch = args.batch_size or (64 if device.type == "cuda" else 8)
    torch.manual_seed(0)

    model = mmzoo.create(NAME, num_classes=10).to(device).train()
    hand = HandWritten(10).to(device).train()
    image = torch.randn(batch, 3, size, size, device=device)
    ids = torch.randint(1, 8192, (batch, args.seq_len), device=device)
    mask = torch.ones(batch, args.seq_len, dtype=torch.bool, device=device)
    mask[: batch // 2, args.seq_len // 2:] = False
    ids = ids.masked_fill(~mask, 0)
    labels = torch.randint(0, 10, (batch,), device=device)
    n_model = sum(p.numel() for p in model.parameters())
    n_hand = sum(p.numel() for p in hand.parameters())

    def step_mmzoo():
        loss = nn.functional.cross_entropy(model(image=image, text={"input_ids": ids, "attention_mask": mask}), labels)
        loss.backward()

    def step_hand():
        loss = nn.functional.cross_entropy(hand(image, ids, mask), labels)
        loss.backward()

    for _ in range(3):  # warm-up both
        step_mmzoo()
        step_hand()
    synchronize(device)
    times = {"mmzoo": [], "hand": []}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        for key, fn in (("mmzoo", step_mmzoo), ("hand", step_hand)):
            model.zero_grad(set_to_none=True)
            hand.zero_grad(set_to_none=True)
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[key].append(time.perf_counter() - start)
    t_m, t_h = statistics.median(times["mmzoo"]), statistics.median(times["hand"])
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"batch {batch}, image {size}x{size}, text length {args.seq_len}, {args.repeats} interleaved repeats")
    print(f"params: mmzoo {n_model:,} vs hand-written {n_hand:,} "
          f"(difference {n_model - n_hand:,}: concat's learned missing-input embeddings)")
    print(f"forward+backward median: mmzoo {1000 * t_m:.2f} ms, hand-written {1000 * t_h:.2f} ms, "
          f"ratio {t_m / t_h:.3f}")

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loads, builds = [], []
        for _ in range(5):
            start = time.perf_counter()
            mmzoo.load(tmp)
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            rebuilt = mmzoo.create(NAME, num_classes=10)
            rebuilt.load_state_dict(load_file(f"{tmp}/model.safetensors"))
            builds.append(time.perf_counter() - start)
    t_l, t_b = statistics.median(loads), statistics.median(builds)
    print(f"load median: mmzoo.load {1000 * t_l:.1f} ms, create + safetensors load_file + load_state_dict "
          f"{1000 * t_b:.1f} ms, ratio {t_l / t_b:.3f}")


if __name__ == "__main__":
    main()
