"""Memory and speed of the input pipeline as the dataset grows (issue 10).

Trains ``resnet18+lstm/concat`` for one epoch at 64x64 on N synthetic PNG
files (written to a temporary folder, with a short text each), on the CPU,
once per feeding mode, each run in its own process:

- ``memory``: the old path, the whole split encoded into tensors first (``cache="memory"``);
- ``stream``: one sample at a time through a DataLoader with ``--workers`` worker processes (``cache="none"``).

Reports per N and mode the peak RSS of the training process (and of its
largest worker), the training throughput, and the ratios the issue sets
targets for, measured in the same run: the streaming peak RSS at the largest
N over the smallest (target <= 1.15; the memory path grows linearly) and the
streaming throughput over the memory path at the smallest N (target >= 0.8).

    python benchmarks/data_scaling.py                       # N = 1000, 4000, 16000 (minutes)
    python benchmarks/data_scaling.py --sizes 64,128 --out /tmp/smoke.jsonl   # a smoke run

Rows are appended to ``--out`` (JSONL, default ``benchmarks/results/data_scaling.jsonl``)
and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "resnet18+lstm/concat"
SIZE = 64


def write_images(folder: Path, n: int) -> None:
    """N 64x64 RGB PNGs: noise plus a bright square whose corner is the label (4 classes)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 120, (SIZE, SIZE, 3), dtype=np.uint8)
        label = i % 4
        y, x = divmod(label, 2)
        array[y * 32:y * 32 + 24, x * 32:x * 32 + 24] = 230
        Image.fromarray(array).save(folder / f"{i:06d}.png")


def child(mode: str, n: int, folder: Path, workers: int, batch_size: int, threads: int) -> dict:
    """One training run (called in a fresh process)."""
    import torch

    import mmzoo
    from mmzoo.tasks import Split
    from mmzoo.train import fit

    torch.set_num_threads(threads)
    paths = [str(folder / f"{i:06d}.png") for i in range(n)]
    texts = [f"picture number {i} of a square" for i in range(n)]
    split = Split(inputs={"image": paths, "text": texts}, labels=torch.tensor([i % 4 for i in range(n)]))
    torch.manual_seed(0)
    model = mmzoo.create(MODEL, num_classes=4)
    model.processor["image"].data_config.update(input_size=(3, SIZE, SIZE), crop_pct=1.0)  # before first use
    cache = "memory" if mode == "memory" else "none"
    start = time.perf_counter()
    result = fit(model, split, None, epochs=1, batch_size=batch_size, cache=cache, augment=False,
                 num_workers=workers if mode == "stream" else 0, progress=False, device="cpu")
    wall = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # KiB on Linux
    workers_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mode": mode, "n": n, "workers": workers if mode == "stream" else 0, "batch_size": batch_size,
            "threads": threads, "peak_rss_mb": round(own, 1),
            "worker_peak_rss_mb": round(workers_rss, 1) if mode == "stream" and workers else None,
            "train_samples_per_s": round(result.train_samples_per_s, 2), "wall_s": round(wall, 2),
            "steps": result.steps, "data": result.data}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000,16000", help="comma-separated N")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--max-memory-n", type=int, default=16000, help="largest N run on the memory path")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_scaling.jsonl"))
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = child(args.child[0], int(args.child[1]), Path(args.folder), args.workers, args.batch_size,
                    args.threads)
        print(json.dumps(row))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="mmzoo-data-scaling-") as tmp:
        for n in sizes:
            folder = Path(tmp) / f"n{n}"
            write_images(folder, n)
            for mode in ("memory", "stream"):
                if mode == "memory" and n > args.max_memory_n:
                    continue
                command = [sys.executable, __file__, "--child", mode, str(n), "--folder", str(folder),
                           "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                           "--threads", str(args.threads)]
                proc = subprocess.run(command, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update({"model": MODEL, "image_size": SIZE, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(),
                            "git_sha": os.environ.get("MMZOO_GIT_SHA") or _git_sha()})
                rows.append(row)
                print(f"N={n:>6} {mode:<6} peak RSS {row['peak_rss_mb']:>8.1f} MB  "
                      f"{row['train_samples_per_s']:>8.1f} samples/s", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(report(rows, sizes))
    print(f"\nrows appended to {out}")
    return 0


def report(rows: list[dict], sizes: list[int]) -> str:
    by = {(r["mode"], r["n"]): r for r in rows}
    lines = ["| N | mode | peak RSS (MB) | largest worker RSS (MB) | train samples/s |",
             "|---:|---|---:|---:|---:|"]
    for r in rows:
        worker = f"{r['worker_peak_rss_mb']:.0f}" if r.get("worker_peak_rss_mb") else "-"
        lines.append(f"| {r['n']} | {r['mode']} | {r['peak_rss_mb']:.0f} | {worker} | {r['train_samples_per_s']:.1f} |")
    small, large = min(sizes), max(sizes)
    notes = []
    for mode in ("stream", "memory"):
        if (mode, small) in by and (mode, large) in by and small != large:
            growth = by[(mode, large)]["peak_rss_mb"] / by[(mode, small)]["peak_rss_mb"]
            notes.append(f"{mode}: peak RSS at N={large} / N={small} = {growth:.2f}x"
                         + (" (target <= 1.15)" if mode == "stream" else ""))
    if ("stream", small) in by and ("memory", small) in by:
        ratio = by[("stream", small)]["train_samples_per_s"] / by[("memory", small)]["train_samples_per_s"]
        notes.append(f"stream / memory throughput at N={small}: {ratio:.2f}x (target >= 0.8)")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
