"""Training and evaluation: ``fit(model, train, val)`` and ``evaluate(model, split)``.

- AdamW, cross-entropy, linear LR warm-up (then cosine decay when the number
  of steps is known), gradient clipping, optional bf16/fp16 autocast.
- Modality dropout: ``fit(..., modality_dropout=p)`` sets the model's own
  per-sample input dropout, active in train mode only.
- Early stopping on the validation score (``metric``: accuracy or macro-F1);
  the best weights are restored at the end and, with ``out=DIR``, saved with
  ``save_pretrained`` whenever the score improves.
- Data-parallel under ``torchrun`` (DDP; ``gloo`` on CPU, ``nccl`` on GPU):
  ``batch_size`` is per process, every process sees a disjoint shard of each
  epoch's permutation, and only rank 0 writes checkpoints and shows progress.

Splits are :class:`mmzoo.tasks.Split` objects (raw lists are run through the
model's processor once; an untrained scratch tokenizer is first fitted on the
training texts) or :class:`Encoded` tensors from :func:`encode`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmzoo.errors import InputError

__all__ = ["Encoded", "FitResult", "encode", "fit", "evaluate", "predict", "fit_tokenizers",
           "setup_distributed"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------- data
@dataclass
class Encoded:
    """A split as tensors: ``inputs[slot]`` is a tensor or a dict of tensors
    (text: ``input_ids``/``attention_mask``), all with samples along dim 0."""

    inputs: dict[str, Any]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: Tensor, device: torch.device | str | None = None,
              drop: Sequence[str] = (), channels_last: bool = False) -> dict[str, Any]:
        out = {}
        for slot, value in self.inputs.items():
            if slot in drop:
                continue
            out[slot] = _take(value, index, device)
            if channels_last and isinstance(out[slot], Tensor) and out[slot].dim() == 4:
                out[slot] = out[slot].contiguous(memory_format=torch.channels_last)
        return out


def _take(value: Any, index: Tensor, device) -> Any:
    if isinstance(value, Mapping):
        return {k: _take(v, index, device) for k, v in value.items()}
    return value[index].to(device, non_blocking=True)


def _scratch_processors(model) -> dict[str, Any]:
    from mmzoo.processing import ScratchTextProcessor

    return {slot: p for slot, p in model.processor.processors.items() if isinstance(p, ScratchTextProcessor)}


def fit_tokenizers(model, split, *, force: bool = False) -> list[str]:
    """Fit the model's untrained scratch tokenizers on the split's texts
    (every process of a distributed run gets rank 0's tokenizer). Returns the
    input names fitted. A tokenizer that was already fitted (vocabulary above
    one id per byte) is kept unless ``force``."""
    fitted = []
    for slot, processor in _scratch_processors(model).items():
        values = getattr(split, "inputs", {}).get(slot)
        if values is None or isinstance(values, (Tensor, Mapping)):
            continue
        untrained = processor.tokenizer.get_vocab_size() <= len(processor.SPECIALS) + 256
        if not (untrained or force):
            continue
        if _world_size() > 1:
            import torch.distributed as dist

            payload = [None]
            if dist.get_rank() == 0:
                processor.fit(list(values))
                payload = [processor.tokenizer.to_str()]
            dist.broadcast_object_list(payload, src=0)
            from tokenizers import Tokenizer

            processor.tokenizer = Tokenizer.from_str(payload[0])
        else:
            processor.fit(list(values))
        fitted.append(slot)
    return fitted


def encode(model, split) -> Encoded:
    """Turn a :class:`~mmzoo.tasks.Split` into tensors for ``model`` (raw
    values through ``model.processor``); inputs the model does not take are
    left out. An :class:`Encoded` is returned as is."""
    if isinstance(split, Encoded):
        return split
    inputs = getattr(split, "inputs", None)
    if inputs is None:
        raise InputError(f"expected a mmzoo.tasks.Split or mmzoo.train.Encoded, got {type(split).__name__}")
    missing = [slot for slot in model.inputs if slot not in inputs]
    if missing:
        raise InputError(f"the model takes input(s) {list(model.inputs)} but the data has "
                         f"{sorted(inputs)}: no {missing}; build a model with one encoder per data input")
    out: dict[str, Any] = {}
    for slot in model.inputs:
        values = inputs[slot]
        if isinstance(values, (Tensor, Mapping)):
            out[slot] = values
        else:
            out[slot] = model.processor(**{slot: list(values)})[slot]
    labels = torch.as_tensor(split.labels, dtype=torch.long)
    return Encoded(out, labels)


# ---------------------------------------------------------------- distributed
def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def setup_distributed(device: str | None = None) -> torch.device:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (even
    with one process): ``nccl`` with one GPU per local rank, else ``gloo``.
    Returns the device this process trains on."""
    import torch.distributed as dist

    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))  # by torchrun
    if (launched or world > 1) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1 or device in (None, "cuda"):
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device(device)
    return torch.device("cpu")


# ---------------------------------------------------------------- metrics
def _scores(labels: Tensor, preds: Tensor, num_classes: int) -> dict[str, float]:
    from sklearn.metrics import f1_score

    accuracy = float((preds == labels).float().mean()) if len(labels) else float("nan")
    f1 = float(f1_score(labels.numpy(), preds.numpy(), average="macro",
                        labels=list(range(num_classes)) if num_classes else None, zero_division=0))
    return {"accuracy": accuracy, "macro_f1": f1}


@torch.no_grad()
def predict(model, data, *, batch_size: int = 256, device=None, drop: Sequence[str] = (),
            precision: str = "fp32", channels_last: bool = False) -> Tensor:
    """Logits for every sample (eval mode, no grad); ``drop`` omits inputs."""
    module = _unwrap(model)
    data = encode(module, data)
    device = torch.device(device) if device is not None else module._device()
    was_training = module.training
    module.eval()
    outputs = []
    try:
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            with _autocast(device, precision):
                logits = model(**data.batch(index, device, drop, channels_last))
            outputs.append(logits.float().cpu())
    finally:
        module.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, module.num_classes)


def evaluate(model, data, *, batch_size: int = 256, device=None, drop: Sequence[str] = (),
             precision: str = "fp32", channels_last: bool = False) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "loss"}`` on ``data``; ``drop=("text",)``
    scores the model with that input missing (omitted)."""
    module = _unwrap(model)
    data = encode(module, data)
    logits = predict(model, data, batch_size=batch_size, device=device, drop=drop,
                     precision=precision, channels_last=channels_last)
    scores = _scores(data.labels, logits.argmax(1), module.num_classes)
    scores["loss"] = float(F.cross_entropy(logits, data.labels)) if len(data) else float("nan")
    return scores


# ---------------------------------------------------------------- training
@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch ``history``, the best validation score
    and epoch, steps and samples trained, and timing (``first_step_s``
    includes one-off costs such as ``torch.compile``; ``train_samples_per_s``
    excludes the first step and evaluation)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = float("nan")
    best_epoch: int = -1
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    first_step_s: float = 0.0
    train_samples_per_s: float = float("nan")
    stopped: str = "epochs"
    checkpoint: str | None = None


def _unwrap(model):
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def _autocast(device, precision: str):
    dtype = PRECISIONS.get(precision, "bad")
    if dtype == "bad":
        raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool,
                   rank: int, world: int) -> Iterator[Tensor]:
    """This rank's batches of one epoch: a shared permutation, padded by
    wrap-around so every rank runs the same number of steps, taken
    round-robin so ranks' batches together form the single-process batch."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    per_step = batch_size * world
    steps = max(1, math.ceil(n / per_step))
    total = steps * per_step
    if total > n:
        order = torch.cat([order, order[: total - n].repeat(math.ceil((total - n) / max(n, 1)))[: total - n]])
    shard = order[rank::world]
    for step in range(steps):
        yield shard[step * batch_size:(step + 1) * batch_size]


def fit(model, train, val=None, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
        weight_decay: float = 0.01, warmup_steps: int | float = 0.05, grad_clip: float | None = 1.0,
        precision: str = "fp32", modality_dropout: float | None = None, patience: int | None = 5,
        metric: str = "accuracy", out: str | os.PathLike | None = None, seed: int = 0,
        device: str | torch.device | None = None, progress: bool = True, max_steps: int | None = None,
        budget_seconds: float | None = None, compile: bool = False, channels_last: bool = False,
        shuffle: bool = True, find_unused_parameters: bool = False, eval_batch_size: int = 256,
        log=None) -> FitResult:
    """Train ``model`` on ``train``; pick the epoch with the best ``val`` score.

    ``warmup_steps``: an int number of steps, or a float fraction of all steps
    (when the total is known; else of one epoch). Training stops after
    ``epochs``, ``max_steps``, ``budget_seconds`` of training (the first step,
    which holds one-off costs such as ``torch.compile``, is not charged), or
    ``patience`` epochs without a better validation score (None or 0: no early
    stopping), whichever comes first. The model ends with its best weights
    (saved to ``out`` when given). Under
    ``torchrun`` it trains data-parallel (see the module docstring).
    """
    from tqdm.auto import tqdm

    if metric not in ("accuracy", "macro_f1"):
        raise InputError(f"metric must be 'accuracy' or 'macro_f1', got {metric!r}")
    if model.num_classes <= 0:
        raise InputError("fit() trains a classifier: build the model with num_classes > 0")
    device = setup_distributed(str(device) if device is not None else None)
    rank, world = _rank(), _world_size()
    torch.manual_seed(seed)
    if modality_dropout is not None:
        if not 0.0 <= modality_dropout < 1.0:
            raise InputError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        model.modality_dropout = modality_dropout
    fit_tokenizers(model, train)
    train_data = encode(model, train)
    val_data = encode(model, val) if val is not None else None
    if len(train_data) == 0:
        raise InputError("the training split is empty")

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if _distributed():
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=find_unused_parameters)
    if compile:
        net = torch.compile(net)

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = max(1, math.ceil(len(train_data) / (batch_size * world)))
    total_steps = epochs * steps_per_epoch if budget_seconds is None else None
    if max_steps is not None:
        total_steps = min(total_steps or max_steps, max_steps)
    if isinstance(warmup_steps, float):
        warmup = int(round(warmup_steps * (total_steps or steps_per_epoch)))
    else:
        warmup = int(warmup_steps)

    def schedule(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if total_steps:
            progress_ = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))
        return 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(seed)

    result = FitResult()
    best_state = None
    bad_epochs = 0
    step = 0
    train_time = 0.0
    first_samples = 0
    is_main = rank == 0
    bar = tqdm(total=total_steps, disable=not (progress and is_main), desc="train", unit="step",
               dynamic_ncols=True, leave=False)
    try:
        for epoch in range(epochs):
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            count = 0
            stop = None
            for index in _epoch_batches(len(train_data), batch_size, generator, shuffle, rank, world):
                batch = train_data.batch(index, device, channels_last=channels_last)
                labels = train_data.labels[index].to(device, non_blocking=True)
                with _autocast(device, precision):
                    logits = net(**batch)
                    loss = F.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                count += 1
                loss_sum += loss.detach()
                result.samples += len(index) * world
                if step == 1:
                    _sync(device)
                    result.first_step_s = time.perf_counter() - epoch_start
                    first_samples = result.samples
                bar.update(1)
                if step % 10 == 0 and not bar.disable:  # .item() syncs the GPU: only for a visible bar
                    bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
                if max_steps is not None and step >= max_steps:
                    stop = "max_steps"
                elif (budget_seconds is not None  # the first step (compile, lazy init) is not charged
                      and train_time + time.perf_counter() - epoch_start - result.first_step_s >= budget_seconds):
                    stop = "budget"
                if world > 1 and budget_seconds is not None:
                    stop = _agree(stop, device)
                if stop:
                    break
            _sync(device)
            train_time += time.perf_counter() - epoch_start
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(loss_sum)
                loss_sum /= world
            record = {"epoch": epoch, "step": step, "train_loss": float(loss_sum) / max(count, 1),
                      "lr": optimizer.param_groups[0]["lr"], "seconds": train_time}
            if val_data is not None:
                scores = evaluate(model, val_data, batch_size=eval_batch_size, device=device,
                                  precision=precision, channels_last=channels_last)
                record.update({f"val_{k}": v for k, v in scores.items()})
                score = scores[metric]
            else:
                score = -record["train_loss"]
            result.history.append(record)
            if log is not None and is_main:
                log(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{score:.3f}", epoch=epoch)
            if not result.history[:-1] or score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                bad_epochs = 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                if out is not None and is_main:
                    result.checkpoint = str(model.save_pretrained(out))
            else:
                bad_epochs += 1
            if stop:
                result.stopped = stop
                break
            if patience and val_data is not None and bad_epochs >= patience:
                result.stopped = "early_stopping"
                break
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    result.steps = step
    result.train_seconds = train_time
    timed_seconds = train_time - result.first_step_s
    timed_samples = result.samples - first_samples
    result.train_samples_per_s = (timed_samples / timed_seconds if timed_samples and timed_seconds > 0
                                  else result.samples / train_time if train_time > 0 else float("nan"))
    return result


def _agree(stop: str | None, device) -> str | None:
    """Every rank stops when any rank wants to (budget clocks differ)."""
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return (stop or "budget") if flag.item() > 0 else None
