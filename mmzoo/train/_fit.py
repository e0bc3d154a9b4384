"""The training loop: ``fit(model, train, val, config=None, **overrides)``."""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmzoo.data import make_loader, split_texts, to_device
from mmzoo.errors import InputError
from mmzoo.train import _distributed as distributed
from mmzoo.train._amp import autocast, synchronize
from mmzoo.train._config import FitConfig, FitResult
from mmzoo.train._evaluate import evaluate_batches
from mmzoo.train._frozen import frozen_output_cache
from mmzoo.train._loss import class_weights
from mmzoo.train._optim import lr_lambda, make_optimizer

__all__ = ["fit", "fit_tokenizers"]


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
        untrained = processor.tokenizer.get_vocab_size() <= len(processor.SPECIALS) + 256
        if not (untrained or force):
            continue
        if distributed.world_size() > 1:
            import torch.distributed as dist
            from tokenizers import Tokenizer

            payload = [None]
            if dist.get_rank() == 0:
                texts = split_texts(split, slot)
                if texts is not None:
                    processor.fit(texts)
                    payload = [processor.tokenizer.to_str()]
            dist.broadcast_object_list(payload, src=0)
            if payload[0] is None:
                continue
            processor.tokenizer = Tokenizer.from_str(payload[0])
        else:
            texts = split_texts(split, slot)
            if texts is None:
                continue
            processor.fit(texts)
        fitted.append(slot)
    fitted += model.processor.fit(getattr(split, "inputs", {}), force=force)  # tabular statistics
    return fitted


@contextlib.contextmanager
def _modality_dropout(model, p: float | None):
    """The model's per-sample input dropout set to ``p`` for the run only, so
    the model ends as its saved config describes it."""
    if p is None:
        yield
        return
    before = model.modality_dropout
    model.modality_dropout = p
    try:
        yield
    finally:
        model.modality_dropout = before


def fit(model, train, val=None, config: FitConfig | None = None, **overrides: Any) -> FitResult:
    """Train ``model`` on ``train``; pick the epoch with the best ``val`` score.

    ``config`` is a :class:`FitConfig` (default settings when None); keyword
    ``overrides`` replace its fields (``fit(model, train, val, epochs=3,
    lr=3e-3)``). Training stops after ``epochs``, ``max_steps``,
    ``budget_seconds`` of training (the first step, which holds one-off costs
    such as ``torch.compile``, is not charged), or ``patience`` epochs without
    a better validation score, whichever comes first. The model ends with its
    best weights (saved to ``out`` when given), its creation-time modality
    dropout, and torch's global RNG never reseeded. Under ``torchrun`` it
    trains data-parallel, every rank on its own shard of each epoch.
    """
    from tqdm.auto import tqdm

    cfg = FitConfig.build(config, **overrides)
    if model.num_classes <= 0:
        raise InputError("fit() trains a classifier: build the model with num_classes > 0")
    device = distributed.setup_distributed(str(cfg.device) if cfg.device is not None else None)
    rank, world = distributed.rank(), distributed.world_size()
    fit_tokenizers(model, train)
    weight = class_weights(cfg.class_weight, getattr(train, "labels", None), model.num_classes,
                           getattr(model, "labels", None) or ())
    pin = device.type == "cuda"
    train_batches = make_loader(model, train, batch_size=cfg.batch_size, train=True, seed=cfg.seed,
                                shuffle=cfg.shuffle, num_workers=cfg.num_workers, cache=cfg.cache,
                                augment=cfg.augment, augment_options=cfg.augment_options,
                                word_dropout=cfg.word_dropout, rank=rank, world=world, pin_memory=pin,
                                name="train")
    if train_batches.num_samples == 0:
        raise InputError("the training split is empty")
    val_batches = None
    if val is not None:
        val_batches = make_loader(model, val, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                                  cache=cfg.cache, pin_memory=pin, name="val")

    model.to(device)
    weight = weight.to(device) if weight is not None else None
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if distributed.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=cfg.find_unused_parameters)
    if cfg.compile:
        net = torch.compile(net)

    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_mult=cfg.lr_mult)
    steps_per_epoch = train_batches.steps  # None for a stream
    total_steps = cfg.epochs * steps_per_epoch if cfg.budget_seconds is None and steps_per_epoch else None
    if cfg.max_steps is not None:
        total_steps = min(total_steps or cfg.max_steps, cfg.max_steps)
    if isinstance(cfg.warmup_steps, float):
        warmup = int(round(cfg.warmup_steps * (total_steps or steps_per_epoch or 0)))
    else:
        warmup = int(cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    # a stream gives ranks unequal numbers of batches: DDP's Join keeps the early finishers in step
    uneven = world > 1 and steps_per_epoch is None and isinstance(net, nn.parallel.DistributedDataParallel)

    result = FitResult(data={"cache": train_batches.cache, "augment": train_batches.augment,
                             "num_workers": cfg.num_workers if train_batches.cache != "memory" else 0})
    best_state = None
    bad_epochs = 0
    step = 0
    train_time = 0.0
    first_samples = 0
    is_main = rank == 0
    bar = tqdm(total=total_steps, disable=not (cfg.progress and is_main), desc="train", unit="step",
               dynamic_ncols=True, leave=False)
    try:
        with _modality_dropout(model, cfg.modality_dropout), \
                frozen_output_cache(model, [train_batches, val_batches], device, batch_size=cfg.eval_batch_size,
                                    precision=cfg.precision, enabled=cfg.frozen_cache and not cfg.compile) as cached:
            if cached:
                result.data["frozen_cache"] = cached  # inputs whose frozen encoder ran once
            for epoch in range(cfg.epochs):
                model.train()
                train_batches.set_epoch(epoch)
                epoch_start = time.perf_counter()
                loss_sum = torch.zeros((), device=device)
                count = 0
                stop = None
                join = contextlib.nullcontext()
                if uneven:
                    from torch.distributed.algorithms.join import Join

                    join = Join([net])
                with join:
                    for inputs, labels in train_batches:
                        batch = to_device(inputs, device, cfg.channels_last)
                        labels = labels.to(device, non_blocking=True)
                        with autocast(device, cfg.precision):
                            logits = net(**batch)
                            loss = F.cross_entropy(logits.float(), labels, weight=weight)
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        if cfg.grad_clip:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                        scheduler.step()
                        step += 1
                        count += 1
                        loss_sum += loss.detach()
                        result.samples += len(labels) * world
                        if step == 1:
                            synchronize(device)
                            result.first_step_s = time.perf_counter() - epoch_start
                            first_samples = result.samples
                        bar.update(1)
                        if step % 10 == 0 and not bar.disable:  # .item() syncs the GPU: only for a visible bar
                            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
                        if cfg.max_steps is not None and step >= cfg.max_steps:
                            stop = "max_steps"
                        elif (cfg.budget_seconds is not None  # the first step (compile, lazy init) is not charged
                              and train_time + time.perf_counter() - epoch_start - result.first_step_s
                              >= cfg.budget_seconds):
                            stop = "budget"
                        if world > 1 and cfg.budget_seconds is not None and not uneven:
                            stop = distributed.agree(stop, device)
                        if stop:
                            break
                synchronize(device)
                train_time += time.perf_counter() - epoch_start
                loss_sum = distributed.all_mean(loss_sum)
                record = {"epoch": epoch, "step": step, "train_loss": float(loss_sum) / max(count, 1),
                          "lr": optimizer.param_groups[0]["lr"], "seconds": train_time}
                if val_batches is not None:
                    scores = evaluate_batches(model, val_batches, device, precision=cfg.precision,
                                              channels_last=cfg.channels_last)
                    record.update({f"val_{k}": v for k, v in scores.items()})
                    score = scores[cfg.metric]
                else:
                    score = -record["train_loss"]
                result.history.append(record)
                if cfg.log is not None and is_main:
                    cfg.log(record)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{score:.3f}", epoch=epoch)
                if not result.history[:-1] or score > result.best_score:
                    result.best_score, result.best_epoch = score, epoch
                    bad_epochs = 0
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                    if cfg.out is not None and is_main:
                        result.checkpoint = str(model.save_pretrained(cfg.out))
                else:
                    bad_epochs += 1
                if stop:
                    result.stopped = stop
                    break
                if cfg.patience and val_batches is not None and bad_epochs >= cfg.patience:
                    result.stopped = "early_stopping"
                    break
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    distributed.barrier()
    result.steps = step
    result.train_seconds = train_time
    timed_seconds = train_time - result.first_step_s
    timed_samples = result.samples - first_samples
    result.train_samples_per_s = (timed_samples / timed_seconds if timed_samples and timed_seconds > 0
                                  else result.samples / train_time if train_time > 0 else float("nan"))
    return result
