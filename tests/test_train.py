"""mmzoo.train: learning on the tasks, checkpoints, early stopping, AMP,
missing-input evaluation, and DDP (2 CPU processes, gloo) matching 1 process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from queue import Empty

import pytest
import torch

import mmzoo
from mmzoo.errors import InputError
from mmzoo.train import Encoded, encode, evaluate, fit

TEXT = "lstm(hidden_size=32,embed_dim=32,vocab_size=300)"
IMAGE = "cnn(channels=(16,32),img_size=8)"
ICONS = Path("/work/shared/data/tabler-icons/icons/outline")


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
    logged, dropout_during = [], []

    def log(record):
        logged.append(record)
        dropout_during.append(model.modality_dropout)

    result = fit(model, pair_splits["train"], pair_splits["val"], epochs=4, batch_size=32, lr=3e-3,
                 modality_dropout=0.3, out=tmp_path / "best", progress=False, log=log)
    assert set(dropout_during) == {0.3}                     # applied while training ...
    assert model.modality_dropout == 0.0                    # ... and the model ends as created
    assert mmzoo.load(tmp_path / "best").modality_dropout == model.modality_dropout
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
    assert no_image["accuracy"] > 0.5                 # chance is 0.1: the text alone names the digit
    assert no_text["accuracy"] < val["accuracy"]      # the (weaker) image alone scores below both inputs
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


# ------------------------------------------------------------------ FitConfig, optimiser, RNG
def test_fit_config_and_keyword_overrides(pair_splits):
    from mmzoo.train import FitConfig

    torch.manual_seed(0)
    model = mmzoo.create(f"{TEXT}/concat", num_classes=10)
    config = FitConfig(epochs=1, batch_size=32, max_steps=3, progress=False)
    result = fit(model, pair_splits["train"], None, config, max_steps=2)     # an override wins
    assert result.steps == 2 and config.max_steps == 3                        # the config is not changed
    assert fit(model, pair_splits["train"], None, config).steps == 3
    with pytest.raises(InputError, match="unknown setting.*'epochs'"):
        fit(model, pair_splits["train"], None, epoch=1)
    with pytest.raises(InputError, match="metric"):
        FitConfig(metric="auc")
    with pytest.raises(InputError, match="cache"):
        FitConfig(cache="disk")


def test_fit_leaves_the_global_rng_alone(pair_splits):
    torch.manual_seed(0)
    model = mmzoo.create(f"{TEXT}/concat", num_classes=10)   # no dropout: training draws no random numbers
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit(model, pair_splits["train"], pair_splits["val"], epochs=1, seed=0, progress=False)
    assert torch.equal(torch.rand(3), expected)              # the old fit reseeded with torch.manual_seed(seed)


def test_lr_mult_builds_parameter_groups_without_frozen_parameters():
    from mmzoo.train import param_groups

    model = mmzoo.create(f"{IMAGE}+{TEXT}/concat", num_classes=10)
    for p in model.encoders["text"].parameters():
        p.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.1, lr=1e-3, lr_mult={"encoders.image": 0.1, "head": 2.0})
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert not any(id(p) in by_id for p in model.encoders["text"].parameters())
    assert all(by_id[id(p)]["lr"] == pytest.approx(1e-4) for p in model.encoders["image"].parameters())
    assert all(by_id[id(p)]["lr"] == pytest.approx(2e-3) for p in model.head.parameters())
    assert all(by_id[id(p)]["lr"] == pytest.approx(1e-3) for p in model.fusion.parameters())
    bias = model.head[1].bias
    assert by_id[id(bias)]["weight_decay"] == 0.0 and by_id[id(model.head[1].weight)]["weight_decay"] == 0.1
    with pytest.raises(InputError, match="'encoders.imag'.*did you mean 'encoders.image'"):
        param_groups(model, weight_decay=0.0, lr=1e-3, lr_mult={"encoders.imag": 0.1})


def test_lr_mult_in_fit_keeps_a_zero_multiplier_part_fixed(pair_splits):
    torch.manual_seed(0)
    model = mmzoo.create(f"{IMAGE}+{TEXT}/concat", num_classes=10)
    before = {k: v.clone() for k, v in model.encoders["image"].state_dict().items()}
    head_before = model.head[1].weight.clone()
    fit(model, pair_splits["train"], None, epochs=1, max_steps=3, weight_decay=0.0,
        lr_mult={"encoders.image": 0.0}, progress=False)
    for key, value in model.encoders["image"].state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert not torch.equal(model.head[1].weight, head_before)


def test_task_args_are_parsed_as_literals():
    from mmzoo.train.command import parse_task_args

    assert parse_task_args(["group_column=family", "fractions=(0.7,0.1,0.2)", "limit=40", "flag=True",
                            "path=data/shards", "labels='a,b'"]) == {
        "group_column": "family", "fractions": (0.7, 0.1, 0.2), "limit": 40, "flag": True,
        "path": "data/shards", "labels": "a,b"}
    with pytest.raises(InputError, match="key=value"):
        parse_task_args(["novalue"])
    with pytest.raises(InputError, match="fractions"):
        parse_task_args(["fractions=(0.7,0.1"])
    with pytest.raises(InputError, match="twice"):
        parse_task_args(["a=1", "a=2"])


def test_train_cli_takes_task_args_workers_and_augment(tmp_path, capsys):
    from mmzoo.cli import main

    (tmp_path / "img").mkdir()
    rows = ["image,text,label,family"]
    icons = sorted((ICONS).glob("a*.png"))[:16]
    for i, icon in enumerate(icons):
        rows.append(f"{icon},icon {icon.stem.split('-')[0]},{i % 2},{icon.stem.split('-')[0]}")
    (tmp_path / "icons.csv").write_text("\n".join(rows) + "\n")
    name = "cnn(channels=(4,),img_size=16)+lstm(hidden_size=8,embed_dim=8,vocab_size=300)/concat"
    assert main(["train", name, "--task", "csv", "--data", str(tmp_path / "icons.csv"), "--task-arg",
                 "group_column=family", "--task-arg", "fractions=(0.5,0.25,0.25)", "--num-workers", "2",
                 "--augment", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["data"] == {"cache": "none", "augment": True, "num_workers": 2}
    assert "cache=none" in captured.err
    assert main(["train", name, "--task", "csv", "--data", str(tmp_path / "icons.csv"), "--task-arg",
                 "group_colum=family", "--epochs", "1"]) == 2
    assert "group_colum" in capsys.readouterr().err


# ------------------------------------------------------------ class weights


def test_balanced_class_weights_follow_scikit_learns_formula():
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    from mmzoo.train import class_weights

    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 3, 3, 3, 1])      # class 2 never occurs
    weights = class_weights("balanced", labels, 4, ["a", "b", "c", "d"])
    present = [0, 1, 3]
    expected = compute_class_weight("balanced", classes=np.array(present), y=labels.numpy())
    torch.testing.assert_close(weights[present], torch.tensor(expected, dtype=torch.float32))
    assert weights[2] == 0                                               # never a target
    assert weights[1] == pytest.approx(12 / (3 * 3)) and weights[0] == pytest.approx(12 / (3 * 6))
    assert class_weights(None, labels, 4) is None
    by_name = class_weights({"b": 3, 3: 0.5}, labels, 4, ["a", "b", "c", "d"])
    assert by_name.tolist() == [1.0, 3.0, 1.0, 0.5]                      # by label name and by index
    with pytest.raises(InputError, match="class 'e'.*does not have"):
        class_weights({"e": 2}, labels, 4, ["a", "b", "c", "d"])
    with pytest.raises(InputError, match=r"class_weight\['a'\] must be a finite number >= 0"):
        class_weights({"a": -1}, labels, 4, ["a", "b", "c", "d"])
    with pytest.raises(InputError, match="every class weight 0"):
        class_weights({0: 0, 1: 0}, labels, 2)
    with pytest.raises(InputError, match="needs the training split's labels.*stream"):
        class_weights("balanced", None, 4)
    with pytest.raises(InputError, match="class_weight must be None, 'balanced'"):
        mmzoo.train.FitConfig(class_weight="inverse")


def test_balanced_class_weight_makes_the_minority_class_count_as_much():
    """A constant input with 90% class 0: the unweighted cross-entropy is
    minimised at p(1) = 0.1, the balanced one (each class's samples weighing
    n / (2 count) in total the same) at p(1) = 0.5."""
    from mmzoo.tasks import Split

    split = Split({"text": ["same text"] * 100}, torch.tensor([0] * 90 + [1] * 10))
    probability = {}
    for weighting in (None, "balanced"):
        torch.manual_seed(0)
        model = mmzoo.create("ngram_bag(buckets=64,dim=4)/concat", num_classes=2)
        fit(model, split, None, epochs=60, batch_size=100, lr=0.05, weight_decay=0.0, warmup_steps=0,
            class_weight=weighting, progress=False)
        with torch.no_grad():
            logits = model.eval()(**model.processor(text=["same text"]))
        probability[weighting] = float(logits.softmax(-1)[0, 1])
    assert probability[None] == pytest.approx(0.1, abs=0.05)
    assert probability["balanced"] == pytest.approx(0.5, abs=0.05)


def test_class_weight_and_metric_reach_the_cli_and_the_bench(tmp_path):
    from mmzoo.bench.runner import config_id, load_suite, plan
    from mmzoo.train.command import parse_class_weight

    assert parse_class_weight("balanced") == "balanced" and parse_class_weight("none") is None
    assert parse_class_weight('{"1": 3, "5": 0.5}') == {"1": 3, "5": 0.5}
    with pytest.raises(InputError, match="--class-weight 'inverse'"):
        parse_class_weight("inverse")
    suite = tmp_path / "suite.toml"
    suite.write_text('[settings]\nepochs = 1\n[[runs]]\ntask = "digits-pair"\nnames = ["cnn+lstm/concat"]\n'
                     'class_weight = "balanced"\nmetric = "macro_f1"\n'
                     '[[runs]]\ntask = "digits-pair"\nnames = ["cnn+lstm/concat"]\n'
                     '[runs.class_weight]\n"3" = 2.0\n')
    (names, task, weighted), (_, _, by_label) = load_suite(suite)
    job = plan(names, task, weighted)[-1]
    assert job.settings["class_weight"] == "balanced" and job.settings["metric"] == "macro_f1"
    assert plan(names, task, by_label)[-1].settings["class_weight"] == {"3": 2.0}
    plain = plan(names, task, {"epochs": 1})[-1]
    # defaults leave the id as before the settings existed; a weighting makes it another run
    assert config_id(plain.settings) == config_id({k: v for k, v in plain.settings.items()
                                                   if k not in ("class_weight", "metric")})
    assert len({config_id(plain.settings), job.config_id, plan(names, task, by_label)[-1].config_id}) == 3
    with pytest.raises(InputError, match="class_weight must be 'balanced' or a table"):
        plan(names, task, {"class_weight": "inverse"})
    with pytest.raises(InputError, match="metric must be 'accuracy' or 'macro_f1'"):
        plan(names, task, {"metric": "auc"})


def test_train_cli_takes_class_weight_and_metric(capsys):
    from mmzoo.cli import main

    args = ["train", "ngram_bag(buckets=64,dim=4)/concat", "--task", "digits-pair", "--task-arg", "limit=60",
            "--epochs", "2", "--no-progress", "--metric", "macro_f1"]
    assert main([*args, "--class-weight", "balanced"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["test_macro_f1"] >= 0 and "val_macro_f1" in out.err
    assert main([*args, "--class-weight", "inverse"]) != 0
    assert "--class-weight 'inverse': expected 'balanced', 'none' or a JSON object" in capsys.readouterr().err
