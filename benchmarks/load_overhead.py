"""What does ``mmzoo.load`` cost over the unavoidable work?

For each model: ``mmzoo.load(folder)`` (config checks, rebuild, SHA-256 of the
weights, processor files) vs the baseline of building the same model with
``mmzoo.create`` plus ``safetensors.torch.load_file`` + ``load_state_dict``,
interleaved in one run, reported as a ratio of medians (target: <= 1.1).
``load(verify_checksum=False)`` is measured too: the difference between the
two is the SHA-256 of the weights, hashed in a thread while the model is
built. ``sha256_s`` is that hash alone; ``load_cpu_s`` the process CPU time
of one checked load (all threads): above ``load_s`` means the hash ran beside
the build on another core, and the one-minute load average in the
environment says how free the cores were.

A strict load skips the random initialisation the baseline's ``create``
performs (every parameter is overwritten from the file), which is why the
ratio can be below 1.

Caveat for Hugging Face encoders: the baseline's ``mmzoo.create("...minilm...")``
also reads MiniLM's pretrained weights, which ``load`` skips (it rebuilds from
the stored config), so that row favours ``load``.

    python benchmarks/load_overhead.py [--repeats 9] [--out benchmarks/results/load_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import mmzoo
from mmzoo.weights import file_digest

MODELS = ("resnet18+lstm/concat", "resnet18+minilm/concat")


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mmzoo.create(name, num_classes=10).save_pretrained(tmp)

        def baseline():
            model = mmzoo.create(name, num_classes=10)
            model.load_state_dict(load_file(f"{tmp}/model.safetensors"))

        def load():
            mmzoo.load(tmp)

        def load_unchecked():
            mmzoo.load(tmp, verify_checksum=False)

        def sha256():
            file_digest(Path(tmp, "model.safetensors"))

        baseline(), load(), load_unchecked()  # warm-up: imports, plugin discovery, page cache
        base, ours, unchecked, hashes, cpu = [], [], [], [], []
        for _ in range(repeats):
            base.append(_seconds(baseline))
            start = time.process_time()
            ours.append(_seconds(load))
            cpu.append(time.process_time() - start)
            unchecked.append(_seconds(load_unchecked))
            hashes.append(_seconds(sha256))
        size = Path(tmp, "model.safetensors").stat().st_size
    median = statistics.median
    return {"name": name, "weights_mb": round(size / 2**20, 1), "repeats": repeats,
            "baseline_s": round(median(base), 4), "load_s": round(median(ours), 4),
            "load_unchecked_s": round(median(unchecked), 4), "sha256_s": round(median(hashes), 4),
            "load_cpu_s": round(median(cpu), 4),
            "ratio": round(median(ours) / median(base), 3),
            "ratio_unchecked": round(median(unchecked) / median(base), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    rows = []
    for name in MODELS:
        row = measure(name, args.repeats)
        rows.append(row)
        print(f"{name:28s} {row['weights_mb']:7.1f} MB  baseline {row['baseline_s']:.3f} s  "
              f"mmzoo.load {row['load_s']:.3f} s (ratio {row['ratio']:.3f})  "
              f"unchecked {row['load_unchecked_s']:.3f} s (ratio {row['ratio_unchecked']:.3f})  "
              f"sha256 alone {row['sha256_s']:.3f} s, load CPU {row['load_cpu_s']:.3f} s")
    if args.out:
        env = {"git_sha": sha, "torch": torch.__version__, "mmzoo": mmzoo.__version__,
               "python": platform.python_version(), "machine": platform.machine(),
               "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "load_average_1min": round(os.getloadavg()[0], 2)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
