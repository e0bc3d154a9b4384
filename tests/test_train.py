"""mmzoo.train: learning on the tasks, checkpoints, early stopping, AMP,
missing-input evaluation, and DDP (2 CPU processes, gloo) matching 1 process."""

from __future__ import annotations

import os
import time
from queue import Empty

import pytest
import torch

import mmzoo
from mmzoo.errors import InputError
from mmzoo.train import Encoded, encode, evaluate, fit

TEXT = "lstm(hidden_size=32,embed_dim=32,vocab_size=300)"
IMAGE = "cnn(channels=(16,32),img_size=8)"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sum_splits():
    return mmzoo.get_task("digits-sum", seed=0, limit=600, repeats=3).splits()


@pytest.fixture(scope="module")
def pair_splits():
    return mmzoo.get_task("digits-pair", seed=0, limit=400).splits()


@pytest.mark.slow
def test_both_inputs_task_fusion_learns_single_input_stays_at_chance(sum_splits):
    torch.manual_seed(0)
    fused = mmzoo.create(f"{IMAGE}+{TEXT}/bilinear", num_classes=10)
    result = fit(fused, sum_splits["train"], sum_splits["val"], epochs=12, batch_size=32, lr=3e-3,
                 patience=None, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.3, losses
    fused_acc = evaluate(fused, sum_splits["test"])["accuracy"]

    torch.manual_seed(0)
    single = mmzoo.create(f"{IMAGE}/concat", num_classes=10)
    fit(single, sum_splits["train"], sum_splits["val"], epochs=4, batch_size=32, lr=3e-3,
        patience=None, progress=False)
    single_acc = evaluate(single, sum_splits["test"])["accuracy"]
    assert single_acc < 0.2, single_acc          # chance is 0.1
    assert fused_acc > single_acc + 0.15, (fused_acc, single_acc)


def test_fit_saves_best_checkpoint_restores_best_and_evaluates_missing_inputs(pair_splits, tmp_path):
    torch.manual_seed(0)
    model = mmzoo.create(f"{IMAGE}+{TEXT}/concat", num_classes=10, labels=[str(i) for i in range(10)])
    logged = []
    result = fit(model, pair_splits["train"], pair_splits["val"], epochs=4, batch_size=32, lr=3e-3,
                 modality_dropout=0.3, out=tmp_path / "best", progress=False, log=logged.append)
    assert model.modality_dropout == 0.3
    assert [r["epoch"] for r in logged] == list(range(len(result.history)))
    assert result.best_epoch == max(range(len(result.history)), key=lambda i: result.history[i]["val_accuracy"])
    assert result.checkpoint and (tmp_path / "best" / "model.safetensors").exists()
    assert result.train_samples_per_s > 0 and result.steps == 4 * -(-len(pair_splits["train"]) // 32)
    val = evaluate(model, pair_splits["val"])
    assert val["accuracy"] == pytest.approx(result.best_score)      # best weights restored
    loaded = mmzoo.load(tmp_path / "best")                            # includes the fitted tokenizer
    assert evaluate(loaded, pair_splits["val"])["accuracy"] == pytest.approx(result.best_score)
    no_text = evaluate(model, pair_splits["val"], drop=("text",))
    no_image = evaluate(model, pair_splits["val"], drop=("image",))
    assert 0.0 <= no_text["accuracy"] <= 1.0 and 0.0 <= no_image["accuracy"] <= 1.0
    assert set(val) == {"accuracy", "macro_f1", "loss"}


def test_early_stopping_max_steps_budget_and_bf16(pair_splits):
    torch.manual_seed(0)
    model = mmzoo.create(f"{TEXT}/concat", num_classes=10)
    result = fit(model, pair_splits["train"], pair_splits["val"], epochs=50, batch_size=64, lr=0.0,
                 patience=2, progress=False)
    assert result.stopped == "early_stopping" and len(result.history) == 3
    result = fit(model, pair_splits["train"], None, epochs=50, max_steps=5, progress=False)
    assert result.stopped == "max_steps" and result.steps == 5
    result = fit(model, pair_splits["train"], None, epochs=1000, budget_seconds=0.5, progress=False)
    assert result.stopped == "budget"
    result = fit(model, pair_splits["train"], pair_splits["val"], epochs=1, precision="bf16", progress=False)
    assert len(result.history) == 1 and result.history[0]["train_loss"] == result.history[0]["train_loss"]
    with pytest.raises(InputError, match="precision"):
        fit(model, pair_splits["train"], None, epochs=1, precision="fp8", progress=False)


def test_fit_rejects_mismatched_inputs_and_embedding_models(pair_splits):
    model = mmzoo.create(f"{TEXT}/concat", num_classes=0)
    with pytest.raises(InputError, match="num_classes"):
        fit(model, pair_splits["train"], None, epochs=1, progress=False)
    model = mmzoo.create(f"{IMAGE}+{TEXT}/concat", num_classes=10)
    text_only = type(pair_splits["train"])(inputs={"text": pair_splits["train"].inputs["text"]},
                                           labels=pair_splits["train"].labels)
    with pytest.raises(InputError, match="no \\['image'\\]"):
        fit(model, text_only, None, epochs=1, progress=False)


# ------------------------------------------------------------------ DDP
DDP_NAME = "cnn(channels=(4,8),img_size=8)+lstm(hidden_size=16,embed_dim=16,vocab_size=300)/concat"


def _ddp_worker(rank: int, world: int, init_file: str, data: Encoded, batch_size: int, queue) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    # a file rendezvous (no port races) and a timeout, so a lost peer fails instead of hanging
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = mmzoo.create(DDP_NAME, num_classes=10)
        result = fit(model, data, None, epochs=2, max_steps=6, batch_size=batch_size, lr=3e-3, grad_clip=None,
                     warmup_steps=0, device="cpu", progress=False)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        queue.put(({k: v.numpy().copy() for k, v in model.state_dict().items()},  # by value, not shared memory
                   [h["train_loss"] for h in result.history]))


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(pair_splits, tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    model = mmzoo.create(DDP_NAME, num_classes=10)
    data = encode(model, pair_splits["train"])          # untrained byte-level tokenizer: ids < 258
    data = Encoded({k: v for k, v in data.inputs.items()}, data.labels)

    torch.manual_seed(0)
    single = mmzoo.create(DDP_NAME, num_classes=10)
    single_result = fit(single, data, None, epochs=2, max_steps=6, batch_size=16, lr=3e-3, grad_clip=None,
                        warmup_steps=0, device="cpu", progress=False)

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), data, 8, queue), nprocs=2,
                                 join=False, start_method="spawn")
    try:
        deadline = time.monotonic() + 180
        result = None
        while result is None:                     # read before joining: the sender exits once it is read
            try:
                result = queue.get(timeout=2)
            except Empty:
                workers.join(timeout=0)           # raises if a worker failed
                assert time.monotonic() < deadline, "DDP workers sent no result"
        state, losses = result
        deadline = time.monotonic() + 60
        while not workers.join(timeout=5):
            assert time.monotonic() < deadline, "DDP workers did not exit"
    finally:
        for process in workers.processes:
            if process.is_alive():
                process.kill()
    for key, value in single.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(state[key]), value, rtol=1e-4, atol=1e-5, msg=key)
    assert losses == pytest.approx([h["train_loss"] for h in single_result.history], rel=1e-4)
