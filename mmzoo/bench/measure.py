"""Measure one combination: train it, score it, time it. Runs inside the
worker process (``python -m mmzoo.bench.worker``), one combination per process.

Timing rules: warm-up iterations before every timed region, the model in
eval mode under ``torch.no_grad()`` for inference, ``torch.cuda.synchronize``
around timed regions on GPU, and one-off costs (``torch.compile``, lazy
initialisation) measured separately from steady-state numbers.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Mapping

import torch

__all__ = ["measure", "environment", "param_counts", "flops_per_sample", "tensor_memory", "PEAK_TFLOPS"]

#: dense peak TFLOP/s by device-name substring: (bf16/fp16 tensor core, fp32 without TF32)
PEAK_TFLOPS = {
    "H200": (989.0, 67.0), "H100 SXM": (989.0, 67.0), "H100 NVL": (835.0, 60.0), "H100": (756.0, 51.0),
    "A100": (312.0, 19.5), "L40S": (362.0, 91.6), "L4": (121.0, 30.3), "A10G": (70.0, 31.2),
    "RTX 4090": (165.2, 82.6), "V100": (125.0, 15.7), "T4": (65.0, 8.1),
}


def peak_tflops(device_name: str, precision: str) -> float | None:
    override = os.environ.get("MMZOO_PEAK_TFLOPS")
    if override:
        return float(override)
    for key, (half, fp32) in PEAK_TFLOPS.items():
        if key in device_name:
            return half if precision in ("bf16", "fp16") else fp32
    return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    import mmzoo

    cuda = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else f"{_cpu_name()} ({os.cpu_count()} cores)",
        "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "mmzoo": mmzoo.__version__, "git_sha": os.environ.get("MMZOO_GIT_SHA") or None,
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "threads": torch.get_num_threads(), "precision": settings["precision"],
        "batch_size": settings["batch_size"], "compile": bool(settings["compile"]),
        "channels_last": bool(settings["channels_last"]), "seed": seed,
    }


def param_counts(model) -> dict[str, Any]:
    """The parameter fields of a row: total, trainable, fusion, and per part
    (counted like the ``mmzoo create`` table)."""
    from mmzoo._params import count_parameters

    parts = {f"encoder.{slot}": count_parameters(enc) for slot, enc in model.encoders.items()}
    parts["fusion"] = count_parameters(model.fusion)
    parts["head"] = count_parameters(model.head)
    return {"params_total": count_parameters(model), "params_trainable": count_parameters(model, True),
            "params_fusion": parts["fusion"], "params_parts": parts}


def flops_per_sample(model, batch: Mapping[str, Any], n: int) -> float | None:
    """Forward FLOPs per sample counted by ``torch.utils.flop_counter``. Ops it
    has no formula for count 0: packed LSTM/GRU decompose into counted matrix
    products on CPU, cuDNN's fused recurrent kernel on GPU does not."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**batch)
    return counter.get_total_flops() / n


def tensor_memory(model, batch: Mapping[str, Any], labels: torch.Tensor, device, precision: str
                  ) -> dict[str, Any]:
    """What a user can act on, on any device: the weights' size and the peak MB of the
    tensors allocated by one training step's forward + backward (activations kept for
    backward, gradients) and by one inference batch, both for ``batch``
    (:mod:`mmzoo.bench.memory`). Leaves the model in eval mode without gradients."""
    from mmzoo.bench.memory import peak_tensor_bytes
    from mmzoo.train import autocast

    def train_step():
        with autocast(device, precision):
            logits = model(**batch)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()

    def inference():
        with torch.no_grad(), autocast(device, precision):
            model(**batch)

    model.train().zero_grad(set_to_none=True)
    train = peak_tensor_bytes(train_step)
    model.eval().zero_grad(set_to_none=True)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {"weights_mb": weights / 2**20, "train_peak_tensor_mb": train / 2**20,
            "infer_peak_tensor_mb": peak_tensor_bytes(inference) / 2**20, "memory_batch_size": len(labels)}


def _timed(fn, device, warmup: int, iters: int) -> list[float]:
    from mmzoo.train import synchronize

    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _percentile(values, q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def measure(name: str, task_name: str, seed: int, settings: Mapping[str, Any], *, log=print) -> dict[str, Any]:
    """Train ``name`` on ``task_name`` with ``settings`` and return the row."""
    import mmzoo
    from mmzoo.bench.results import encode_classes
    from mmzoo.train import (PreparedInputs, autocast, encode, evaluate, fit, fit_tokenizers, logit_scores, predict,
                             predicted_classes, synchronize)

    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    device = torch.device(settings["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU")
    precision = settings["precision"]
    torch.manual_seed(seed)

    task_kwargs = dict(settings.get("task_kwargs") or {})
    if settings.get("data"):
        task_kwargs["data"] = settings["data"]
    task = mmzoo.get_task(task_name, seed=seed, **task_kwargs)
    splits = task.splits()
    if settings.get("pretrained"):  # {KEY} -> this machine's converted file (reused from the cache)
        from mmzoo.converted import fill_placeholders, parse_specs, prepare_all

        name = fill_placeholders(name, prepare_all(parse_specs(settings["pretrained"], "bench settings")))
    model = mmzoo.create(name, num_classes=task.num_classes, labels=list(task.labels),
                         modality_dropout=float(settings.get("modality_dropout") or 0.0))
    row: dict[str, Any] = {"status": "ok", "canonical_name": model.name, "inputs": list(model.inputs),
                           "num_classes": task.num_classes}

    # data (scratch tokenizers and tabular statistics are fitted on the training split first;
    # a tabular encoder builds its column parameters then, so they are counted after)
    fit_tokenizers(model, splits["train"])
    row.update(param_counts(model))
    data = {"test": encode(model, splits["test"])}  # train/val go through fit's DataLoader
    row["train_samples"], row["test_samples"] = len(splits["train"]), len(data["test"])

    # ------------------------------------------------ training
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = fit(model, splits["train"], splits["val"], epochs=int(settings["epochs"]),
                 batch_size=int(settings["batch_size"]), lr=float(settings["lr"]),
                 weight_decay=float(settings["weight_decay"]), warmup_steps=settings["warmup"],
                 precision=precision, patience=settings.get("patience"), seed=seed, device=device,
                 progress=False, budget_seconds=settings.get("budget_seconds"),
                 compile=bool(settings["compile"]), channels_last=bool(settings["channels_last"]),
                 num_workers=int(settings.get("num_workers") or 0), augment=settings.get("augment"),
                 class_weight=settings.get("class_weight"), metric=settings.get("metric") or "accuracy",
                 log=lambda r: log(f"epoch {r['epoch'] + 1}/{settings['epochs']}: train loss "
                                   f"{r['train_loss']:.3f}, val acc {r.get('val_accuracy', float('nan')):.3f}, "
                                   f"{r['seconds']:.0f} s"))
    best = result.history[result.best_epoch] if result.best_epoch >= 0 else {}  # metric may be macro_f1
    row.update({"epochs_run": len(result.history), "steps": result.steps, "best_epoch": result.best_epoch,
                "val_accuracy": best.get("val_accuracy", result.best_score), "train_seconds": result.train_seconds,
                "train_samples_per_s": result.train_samples_per_s, "stopped": result.stopped,
                "train_first_step_s": result.first_step_s,
                "train_loss_last": result.history[-1]["train_loss"] if result.history else None})
    if device.type == "cuda":
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["peak_memory_kind"] = "cuda_max_memory_allocated"
    log(f"trained {result.steps} steps in {result.train_seconds:.1f} s, val {result.best_score:.3f}")

    # ------------------------------------------------ scores (eager model, eval mode)
    model.eval()
    common = dict(device=device, precision=precision, channels_last=bool(settings["channels_last"]))
    # the frozen encoders run once over the test inputs; the scores with an input dropped reuse that
    with PreparedInputs(model, data["test"], device=device, precision=precision) as prepared:
        logits = predict(model, data["test"], prepared=prepared, **common)
        scores = logit_scores(logits, data["test"].labels, task.num_classes)
        missing = {}
        if len(model.inputs) > 1:
            for slot in model.inputs:
                missing[slot] = evaluate(model, data["test"], drop=(slot,), prepared=prepared, **common)["accuracy"]
    row.update({"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "test_loss": scores["loss"]})
    # per-sample predictions: the leaderboard's bootstrap over test samples resamples them
    row["test_labels"] = encode_classes(data["test"].labels.tolist(), task.num_classes)
    row["test_predictions"] = encode_classes(predicted_classes(logits).tolist(), task.num_classes)
    row["missing_accuracy"] = missing
    row["missing_accuracy_mean"] = statistics.fmean(missing.values()) if missing else None
    row["missing_accuracy_min"] = min(missing.values()) if missing else None

    if settings.get("robustness"):
        row["robustness"] = _robustness(model, splits["test"], settings, seed, common)
        log(f"robustness: corruption AUC {row['robustness']['corruption_auc']}, "
            f"mismatched {row['robustness']['mismatched_accuracy']}")

    # ------------------------------------------------ FLOPs
    n_flops = min(8, len(data["test"]))
    flop_batch = data["test"].batch(torch.arange(n_flops), device, channels_last=bool(settings["channels_last"]))
    try:
        row["flops_per_sample"] = flops_per_sample(model, flop_batch, n_flops)
    except Exception as exc:  # the counter is best-effort; never lose the row for it
        row["flops_per_sample"] = None
        row["flops_error"] = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------ inference timing
    infer = model
    if settings["compile"]:
        infer = torch.compile(model)
    batch_size = int(settings["batch_size"])
    one = data["test"].batch(torch.arange(1), device, channels_last=bool(settings["channels_last"]))
    full_index = torch.arange(batch_size) % len(data["test"])
    many = data["test"].batch(full_index, device, channels_last=bool(settings["channels_last"]))

    def run(batch):
        def call():
            with torch.no_grad(), autocast(device, precision):
                infer(**batch)
        return call

    compile_s = 0.0
    for batch in (one, many):  # first call per shape: compile / lazy init, reported separately
        start = time.perf_counter()
        run(batch)()
        synchronize(device)
        compile_s += time.perf_counter() - start
    row["first_call_s"] = compile_s
    row["compile_s"] = compile_s if settings["compile"] else None
    latencies = _timed(run(one), device, warmup=5, iters=int(settings["latency_iters"]))
    row["latency_ms_p50"] = 1000 * _percentile(latencies, 0.5)
    row["latency_ms_p95"] = 1000 * _percentile(latencies, 0.95)
    times = _timed(run(many), device, warmup=3, iters=int(settings["throughput_iters"]))
    row["throughput_per_s"] = batch_size / statistics.median(times)

    # ------------------------------------------------ memory, utilisation, environment
    # last: the training step below updates BatchNorm statistics
    row.update(tensor_memory(model, many, data["test"].labels[full_index].to(device), device, precision))
    # the worker's max RSS is mostly torch itself (~1 GB for any model): kept under its
    # true name, never reported as the model's memory
    row["process_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    env = environment(device, settings, seed)
    row["env"] = env
    flops = row.get("flops_per_sample")
    if device.type == "cuda" and flops:
        row["train_tflops"] = 3 * flops * result.train_samples_per_s / 1e12
        row["infer_tflops"] = flops * row["throughput_per_s"] / 1e12
        peak = peak_tflops(env["device_name"], precision)
        row["peak_tflops"] = peak
        row["mfu"] = row["train_tflops"] / peak if peak else None
    return row


def _robustness(model, test, settings: Mapping[str, Any], seed: int, common: Mapping[str, Any]) -> dict[str, Any]:
    """Corruption curves and mismatched pairs on the raw test split."""
    from mmzoo.robustness import LEVELS, model_predictor, robustness_report

    modalities = {slot: encoder.modality for slot, encoder in model.encoders.items()}
    return robustness_report(model_predictor(model, **common), test, modalities,
                             levels=settings.get("robustness_levels") or LEVELS, seed=seed,
                             max_samples=settings.get("robustness_samples"))
