"""The benchmark harness: name patterns, planning and shards, the JSONL file,
the bootstrap intervals, the dirty-tree rule, a real 2-combination CPU sweep
(each in its own process) with a failing combination, resume, and the
leaderboard's three outputs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch
import pytest
from sklearn.metrics import f1_score

from mmzoo.bench import aggregate, append_row, expand_names, parse_shard, plan, read_rows, render, run_sweep
from mmzoo.bench import results, stats
from mmzoo.bench.leaderboard import pareto_front
import mmzoo
import mmzoo.plugins
from mmzoo.cli import main
from mmzoo.errors import InputError, NameSyntaxError

TEXT = "lstm(hidden_size=16,embed_dim=16,vocab_size=300)"
IMAGE = "cnn(channels=(8,16),img_size=8)"
#: the same parts as mmzoo.parse_name spells them (kwargs sorted, values as repr)
TEXT_CANONICAL = "lstm(embed_dim=16,hidden_size=16,vocab_size=300)"
IMAGE_CANONICAL = "cnn(channels=(8, 16),img_size=8)"
SETTINGS = {"epochs": 1, "batch_size": 32, "lr": 3e-3, "task_kwargs": {"limit": 100}, "threads": 1,
            "latency_iters": 5, "throughput_iters": 3, "timeout": 300,
            "robustness": True, "robustness_levels": [0.0, 1.0], "robustness_samples": 50}


def test_expand_names_fnmatch_over_encoders_and_fusions():
    names = expand_names([f"{IMAGE}+{TEXT}/c*", "gr?/concat", "cnn+lstm/concat", f"{IMAGE_CANONICAL}+lstm/conc[a]t"])
    assert names == [f"{IMAGE_CANONICAL}+{TEXT_CANONICAL}/concat", f"{IMAGE_CANONICAL}+{TEXT_CANONICAL}/cross_attn",
                     "gru/concat", "cnn+lstm/concat", f"{IMAGE_CANONICAL}+lstm/concat"]
    assert len(expand_names(["cnn+lstm/*"])) >= 10
    # the grammar is mmzoo.parse_name's: hf ids keep their '/', glob characters inside strings stay
    assert expand_names(["hf:org/model+resnet18/gated"]) == ["hf:org/model+resnet18/gated"]
    assert expand_names(["cnn+lstm(x='a/b+c*')/film(condition='text')"]) == [
        "cnn+lstm(x='a/b+c*')/film(condition='text')"]
    with pytest.raises(InputError, match="matches nothing"):
        expand_names(["cnn+lstm/nothing*"])
    with pytest.raises(NameSyntaxError, match="needs a fusion"):
        expand_names(["resnet18"])


def test_plan_puts_baselines_first_and_shards_partition_the_jobs():
    jobs = plan(["cnn+lstm/concat", "cnn+gru/concat"], "digits-sum", {"seeds": 2})
    names = [(j.name, j.seed) for j in jobs]
    assert names.index(("cnn/concat", 0)) < names.index(("cnn+lstm/concat", 0))
    assert len(jobs) == 2 * 5                    # cnn, lstm, cnn+lstm, gru, cnn+gru per seed
    assert jobs[2].baselines == ["cnn/concat", "lstm/concat"]
    assert len({j.config_id for j in jobs}) == 1
    assert plan(["cnn+lstm/concat"], "t", {"epochs": 3})[0].config_id != jobs[0].config_id
    shards = [[j.key for i, j in enumerate(jobs) if i % 3 == k] for k in range(3)]
    assert sorted(k for s in shards for k in s) == sorted(j.key for j in jobs)
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "x"):
        with pytest.raises(InputError):
            parse_shard(bad)
    with pytest.raises(InputError, match="unknown bench setting"):
        plan(["cnn+lstm/concat"], "t", {"epoch": 3})


def test_jobs_must_be_a_whole_number_of_at_least_one(tmp_path):
    for bad in (0, -2, 1.5):
        with pytest.raises(InputError, match=r"jobs must be a whole number >= 1 \(combinations run at once\)"):
            run_sweep(["cnn+lstm/concat"], "digits-pair", SETTINGS, tmp_path / "r.jsonl", jobs=bad)
    assert not (tmp_path / "r.jsonl").exists()


def test_a_suite_runs_its_tasks_in_one_pool_of_jobs(tmp_path, capsys):
    # one job per task: with two at a time the second task's job starts before the first task's ends
    settings = {k: v for k, v in SETTINGS.items() if k not in ("task_kwargs", "robustness", "robustness_levels")}
    suite = tmp_path / "suite.toml"
    suite.write_text("[settings]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
                     + "robustness = false\nbaselines = false\ntask_kwargs = { limit = 100 }\n"
                     + "".join(f'[[runs]]\ntask = "{task}"\nnames = ["{IMAGE}+{TEXT}/concat"]\n'
                               for task in ("digits-pair", "digits-sum")))
    out = tmp_path / "r.jsonl"
    assert main(["bench", "--suite", str(suite), "--out", str(out), "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mmzoo bench: 2 job(s) to run, 2 at a time" in lines
    events = [found.groups() for found in (re.match(r"  \[(\d)/2\] (running|ok) ", m) for m in lines) if found]
    assert [e[1] for e in events[:2]] == ["running", "running"] and sorted(e[0] for e in events[:2]) == ["1", "2"]
    assert sorted(r["task"] for r in read_rows(out) if r["status"] == "ok") == ["digits-pair", "digits-sum"]
    # a bad --jobs is refused before anything is planned or written
    assert main(["bench", "--suite", str(suite), "--out", str(tmp_path / "none.jsonl"), "--jobs", "0"]) == 2
    assert "jobs must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "none.jsonl").exists()


def test_jsonl_appends_are_whole_lines_and_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    threads = [threading.Thread(target=lambda i=i: [append_row(path, {"i": i, "j": j, "pad": "x" * 5000})
                                                     for j in range(20)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = read_rows(path)
    assert len(rows) == 80 and {(r["i"], r["j"]) for r in rows} == {(i, j) for i in range(4) for j in range(20)}
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"torn": ')
    assert len(read_rows(path)) == 80


def test_pareto_front():
    points = [(1, 5), (2, 4), (3, 3), (1, 1), (2, 2)]
    assert pareto_front(points) == [0, 1, 2]


ROW_FIELDS = {
    "name", "task", "seed", "status", "kind", "config_id", "canonical_name", "params_total", "params_trainable",
    "params_fusion", "params_parts", "flops_per_sample", "latency_ms_p50", "latency_ms_p95", "throughput_per_s",
    "train_samples_per_s", "process_max_rss_mb", "accuracy", "macro_f1", "missing_accuracy", "env", "first_call_s",
    "compile_s", "train_seconds", "steps", "wall_seconds", "weights_mb", "train_peak_tensor_mb",
    "infer_peak_tensor_mb", "memory_batch_size",
}
ENV_FIELDS = {"device", "device_name", "torch", "cuda", "mmzoo", "git_sha", "precision", "batch_size", "compile",
              "seed"}


@pytest.mark.slow
def test_cpu_sweep_rows_failures_resume_and_leaderboard(tmp_path):
    out = tmp_path / "results.jsonl"
    names = [f"{IMAGE}+{TEXT}/concat", f"{IMAGE}+{TEXT}/late", f"{IMAGE}+{TEXT}/nosuch_fusion"]
    messages = []
    rows = run_sweep(names, "digits-pair", SETTINGS, out, print_fn=messages.append)
    # baselines cnn and lstm (shared), 2 good combinations, 1 failing combination
    assert len(rows) == 5 and len(read_rows(out)) == 5
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 4 and len(failed) == 1
    assert "nosuch_fusion" in failed[0]["name"] and "UnknownNameError" in failed[0]["error"]
    for row in ok:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        assert ENV_FIELDS <= set(row["env"]), ENV_FIELDS - set(row["env"])
        # the recorded per-sample predictions reproduce the recorded scores
        labels = results.decode_classes(row["test_labels"])
        preds = results.decode_classes(row["test_predictions"])
        assert len(labels) == len(preds) == row["test_samples"] == 20 and row["num_classes"] == 10
        assert row["accuracy"] == pytest.approx(np.mean(np.asarray(labels) == preds))
        assert row["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro", labels=range(10),
                                                         zero_division=0))
        # robustness on the raw test split agrees with the encoded evaluation at level 0
        report = row["robustness"]
        assert report["samples"] == 20 and report["clean_accuracy"] == pytest.approx(row["accuracy"])
        assert set(report["curves"]) == set(row["inputs"])
        assert set(report["mismatched_accuracy"]) == (set(row["inputs"]) if len(row["inputs"]) > 1 else set())
        assert row["params_total"] > 0 and row["flops_per_sample"] > 0
        assert row["latency_ms_p95"] >= row["latency_ms_p50"] > 0
        assert row["throughput_per_s"] > 0 and row["train_samples_per_s"] > 0 and row["process_max_rss_mb"] > 0
        assert "peak_memory_mb" not in row  # on CPU no allocator figure is claimed
        # the model's own tensors: a training step keeps activations and gradients, inference does not
        assert row["train_peak_tensor_mb"] > row["infer_peak_tensor_mb"] > 0 and row["weights_mb"] > 0
        assert row["memory_batch_size"] == SETTINGS["batch_size"]
        assert row["env"]["device"] == "cpu" and row["env"]["threads"] == 1
    fused = [r for r in ok if r["kind"] == "model"]
    assert len(fused) == 2
    for row in fused:
        assert set(row["missing_accuracy"]) == {"image", "text"}
        assert math.isclose(row["multimodal_gain"], row["accuracy"] - row["best_single_accuracy"])
    late = next(r for r in fused if r["name"].endswith("/late"))
    assert late["params_fusion"] > 0
    assert json.loads(out.read_text().splitlines()[0])["status"] == "ok"
    # progress: each job is announced before it runs, with a sweep ETA once one has finished
    running = [m for m in messages if "] running " in m]
    assert len(running) == 5 and running[0].startswith("  [1/5] running ") and "ETA" not in running[0]
    assert all(re.search(r"\(sweep ETA \d+ (s|min \d\d s)\)$", m) for m in running[1:]), running
    # ... and the worker's epochs are passed on while it trains
    assert sum(bool(re.match(r"  \[\d/5\]   epoch 1/\d+: train loss \d", m)) for m in messages) == len(ok), messages

    # two jobs at a time: the same rows (each job is seeded, one thread), written as they finish
    parallel_out, parallel_messages = tmp_path / "parallel.jsonl", []
    parallel = run_sweep(names, "digits-pair", SETTINGS, parallel_out, jobs=2, print_fn=parallel_messages.append)
    assert "0 already done, 5 to run" in parallel_messages[0]
    assert parallel_messages[1] == "mmzoo bench: 5 job(s) to run, 2 at a time"
    by_key = {results.row_key(r): r for r in rows}
    assert sorted(map(results.row_key, parallel)) == sorted(by_key) and len(read_rows(parallel_out)) == 5
    for row in parallel:
        serial = by_key[results.row_key(row)]
        assert row["status"] == serial["status"]
        if row["status"] == "ok":
            assert (row["test_predictions"], row["accuracy"]) == (serial["test_predictions"], serial["accuracy"])
    events = [m.split("] ", 1)[1].split()[0] for m in parallel_messages if re.match(r"  \[\d/5\] (running|ok|FAILED)", m)]
    assert events[:2] == ["running", "running"]  # the second starts before the first ends

    # resume: the same command runs nothing; --retry-failed reruns only the failed rows
    assert run_sweep(names, "digits-pair", SETTINGS, out, print_fn=messages.append) == []
    assert any("5 already done, 0 to run" in m for m in messages)
    retried = run_sweep(names, "digits-pair", {**SETTINGS, "baselines": True}, out, retry_failed=True,
                        print_fn=messages.append)
    assert len(retried) == 1 and retried[0]["status"] == "failed"

    # leaderboard: markdown, self-contained sortable HTML, PNG plots
    entries, failed_rows = aggregate(read_rows(out))
    assert len(entries) == 4 and len(failed_rows) == 1     # latest row per key
    md, written = render(out, md=tmp_path / "lb.md", html_path=tmp_path / "lb.html", plots=tmp_path / "plots")
    assert "| # | model | acc % | ± std | acc 95% CI | vs best | macro-F1 % |" in md
    assert "cnn+lstm/concat" in md and "Failed runs" in md
    assert "corruption AUC image %" in md and "mismatched, text kept %" in md
    assert [e["vs_best"] for e in entries].count("best") == 1
    page = (tmp_path / "lb.html").read_text()
    assert "<script>" in page and "http://" not in page and "https://" not in page and "data-v=" in page
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["digits-pair-accuracy-vs-robustness.png", "digits-pair-accuracy-vs-throughput.png",
                    "digits-pair-corruption-curves.png"]
    for png in (tmp_path / "plots").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the CLI: resume through `mmzoo bench` (nothing left to run) and `mmzoo leaderboard`
    suite = tmp_path / "suite.toml"
    suite.write_text("[settings]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in SETTINGS.items()
                                              if k != "task_kwargs")
                     + "task_kwargs = { limit = 100 }\n[[runs]]\ntask = \"digits-pair\"\nnames = "
                     + json.dumps(names) + "\n")
    assert main(["bench", "--suite", str(suite), "--out", str(out)]) == 0
    assert len(read_rows(out)) == 6                              # nothing new ran
    assert main(["leaderboard", str(out), "--md", str(tmp_path / "cli.md")]) == 0
    assert (tmp_path / "cli.md").read_text() == md


def test_leaderboard_cli_errors_on_missing_file(tmp_path, capsys):  # noqa: D103
    assert main(["leaderboard", str(tmp_path / "none.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_suite_file_loading(tmp_path):
    from mmzoo.bench import load_suite

    suite = tmp_path / "s.toml"
    suite.write_text('[settings]\nepochs = 3\n[[runs]]\ntask = "digits-sum"\nnames = ["cnn+lstm/concat"]\n'
                     'epochs = 5\n[[runs]]\ntask = "digits-pair"\nnames = ["cnn+lstm/*"]\n')
    runs = load_suite(suite)
    assert runs[0] == (["cnn+lstm/concat"], "digits-sum", {"epochs": 5})
    assert runs[1][2] == {"epochs": 3}
    suite.write_text("[settings]\n")
    with pytest.raises(InputError, match="no \\[\\[runs\\]\\]"):
        load_suite(suite)


# ------------------------------------------------------------------ intervals and noise
def test_resample_scores_are_scikit_learns_with_sample_weights():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
    preds[:10] = 4                                    # class 5 is never true nor predicted
    weights = rng.integers(0, 3, (4, 50))
    weights[0] = 1
    scores = stats.weighted_scores(weights, labels, preds, 6)
    assert scores["macro_f1"] == pytest.approx(
        [f1_score(labels, preds, average="macro", labels=range(6), zero_division=0, sample_weight=w)
         for w in weights])
    assert scores["accuracy"] == pytest.approx([np.average(labels == preds, weights=w) for w in weights])


def test_bootstrap_interval_matches_the_binomial_and_widens_with_seed_spread():
    n = 400
    half = {0: ([1] * n, [1] * (n // 2) + [0] * (n // 2))}        # 50% correct on one seed
    low, high = stats.interval(stats.bootstrap(half, num_classes=2)["accuracy"])
    assert low < 0.5 < high and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / n), rel=0.15)
    assert stats.interval(stats.bootstrap({0: ([1] * 50, [1] * 50)}, num_classes=2)["accuracy"]) == (1.0, 1.0)
    # three seeds at 50/70/90%: the seed-to-seed spread dominates the sampling noise of 2,000 samples
    spread = {s: ([1] * 2000, [1] * int(2000 * acc) + [0] * (2000 - int(2000 * acc)))
              for s, acc in enumerate((0.5, 0.7, 0.9))}
    low, high = stats.interval(stats.bootstrap(spread, num_classes=2)["accuracy"])
    pooled = {0: tuple(sum((list(v[i]) for v in spread.values()), []) for i in (0, 1))}
    pooled_low, pooled_high = stats.interval(stats.bootstrap(pooled, num_classes=2)["accuracy"])
    assert high - low > 0.2 > 0.05 > pooled_high - pooled_low


def _row(name, seed, correct, kind="model", n=300, offset=0):
    """A row whose model is right on samples offset .. offset + correct - 1."""
    labels = [i % 3 for i in range(n)]
    preds = [y if offset <= i < offset + correct else (y + 1) % 3 for i, y in enumerate(labels)]
    return {"status": "ok", "name": name, "task": "t", "seed": seed, "config_id": "c", "kind": kind,
            "accuracy": correct / n, "macro_f1": f1_score(labels, preds, average="macro"), "num_classes": 3,
            "test_labels": results.encode_classes(labels, 3), "test_predictions": results.encode_classes(preds, 3)}


def test_leaderboard_marks_differences_within_noise_of_the_best():
    rows = []
    for seed in range(3):
        # close: 10 samples only best gets right, 6 only close gets right (paired: a net 4 of 300)
        rows += [_row("a+b/best", seed, 270), _row("a+b/close", seed, 266, offset=10),
                 _row("a+b/poor", seed, 180), _row("a+b/old", seed, 100)]
    for row in rows:
        if row["name"] == "a+b/old":  # a row written before predictions were recorded
            del row["test_labels"], row["test_predictions"]
    entries, _ = aggregate(rows)
    by_name = {e["name"]: e for e in entries}
    assert [by_name[n]["vs_best"] for n in ("a+b/best", "a+b/close", "a+b/poor", "a+b/old")] == [
        "best", "within noise", "below", None]
    tied, _ = aggregate([_row("a+b/tie", 0, 270), *rows[:4]])  # a tie: the first row shown is the best
    assert [(e["name"], e["vs_best"]) for e in tied[:2]] == [("a+b/best", "best"), ("a+b/tie", "within noise")]
    low, high = by_name["a+b/close"]["difference_ci"]
    assert low <= 0 <= high and high == pytest.approx(4 / 300, abs=0.02)
    low, high = by_name["a+b/best"]["accuracy_ci"]
    assert low < 0.9 < high and by_name["a+b/old"]["accuracy_ci"] is None
    assert by_name["a+b/best"]["macro_f1_ci"][0] < by_name["a+b/best"]["macro_f1"] < by_name["a+b/best"]["macro_f1_ci"][1]
    assert results.decode_classes(results.encode_classes([0, 61, 7], 62)) == [0, 61, 7]
    assert results.encode_classes([70, 1], 80) == [70, 1]


# ------------------------------------------------------------------ provenance
def _git(root, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def test_results_under_benchmarks_results_need_a_clean_tree(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "code.py").write_text("x = 1\n")
    (root / "benchmarks" / "results" / "r.jsonl").write_text("")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    published = root / "benchmarks" / "results" / "r.jsonl"
    sha = results.git_sha(root)
    assert len(sha) == 40
    (root / "benchmarks" / "results" / "r.jsonl").write_text("{}\n")   # results themselves are not code
    assert results.git_sha(root) == sha
    results.check_publishable(published, root)
    (root / "entries").mkdir()
    (root / "entries" / "w.bin").write_text("0")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "an entry")
    sha = results.git_sha(root)
    (root / "entries" / "w.bin").write_text("1")   # other outputs (zoo entries) are named, also absolute
    assert results.git_sha(root) == sha + "-dirty"
    assert results.git_sha(root, outputs=("benchmarks/results", "entries")) == sha
    assert results.git_sha(root, outputs=("benchmarks/results", str(root / "entries"))) == sha
    _git(root, "checkout", "-q", "entries")
    (root / "code.py").write_text("x = 2\n")
    assert results.git_sha(root) == sha + "-dirty"
    assert results.git_sha(root, outputs=("benchmarks/results", "entries")) == sha + "-dirty"
    with pytest.raises(InputError, match="uncommitted changes .*commit .*--out runs/"):
        results.check_publishable(published, root)
    results.check_publishable(tmp_path / "elsewhere.jsonl", root)     # outside benchmarks/results: allowed
    # the sweep applies the rule before it runs anything
    monkeypatch.setattr(results, "_REPO", root)
    with pytest.raises(InputError, match="refusing to write results"):
        run_sweep(["cnn+lstm/concat"], "digits-pair", SETTINGS, published, print_fn=lambda m: None)
    assert read_rows(published) == [{}]


def test_one_parameter_count_for_the_cli_and_the_rows(capsys):
    import mmzoo
    from mmzoo._params import count_parameters
    from mmzoo.bench.measure import param_counts

    model = mmzoo.create("cnn(channels=(4,),img_size=8)+lstm(hidden_size=8,embed_dim=8,vocab_size=300)/concat",
                         num_classes=3)
    next(model.head.parameters()).requires_grad_(False)
    counts = param_counts(model)
    assert counts["params_total"] == sum(p.numel() for p in model.parameters())
    assert counts["params_total"] - counts["params_trainable"] == next(model.head.parameters()).numel()
    assert sum(counts["params_parts"].values()) == counts["params_total"]
    assert main(["create", model.name, "--num-classes", "3"]) == 0
    total_line = capsys.readouterr().out.strip().splitlines()[-1].split()
    fresh = mmzoo.create(model.name, num_classes=3)
    assert total_line == ["total", f"{count_parameters(fresh):,}", f"{count_parameters(fresh, True):,}"]


def test_a_job_past_its_timeout_is_killed_and_recorded_as_failed():
    from mmzoo.bench.runner import run_job

    (job,) = plan([f"{IMAGE}+{TEXT}/concat"], "digits-pair", {**SETTINGS, "timeout": 1, "baselines": False})
    start = time.monotonic()
    row = run_job(job)
    assert time.monotonic() - start < 20  # killed, not waited for
    assert row["status"] == "failed" and row["error"] == "timed out after 1 s" and row["error_type"] == "timeout"


# ------------------------------------------------ the model's own tensor memory


def test_tensor_memory_counts_what_an_inference_batch_and_a_training_step_allocate():
    from torch import nn

    from mmzoo.bench.memory import TensorMemory, peak_tensor_bytes

    layer = nn.Linear(256, 1024)
    x = torch.randn(64, 256)
    with torch.no_grad():
        assert peak_tensor_bytes(lambda: layer(x)) == 64 * 1024 * 4  # the output, exactly; not the weights
        assert peak_tensor_bytes(lambda: layer(torch.randn(128, 256))) == (128 * 256 + 128 * 1024) * 4
        assert peak_tensor_bytes(lambda: nn.functional.linear(x, torch.randn(2048, 256))) == \
            (2048 * 256 + 64 * 2048) * 4  # a wider layer reports more
    with TensorMemory() as memory:
        layer(x).relu().sum().backward()
    weight_grad, bias_grad, activation = 256 * 1024 * 4, 1024 * 4, 64 * 1024 * 4
    assert memory.current >= weight_grad + bias_grad  # the gradients stay alive in .grad
    # relu's output is kept for backward while the weight gradient is computed
    assert weight_grad + bias_grad + activation <= memory.peak <= weight_grad + bias_grad + 3 * activation
    layer.zero_grad(set_to_none=True)
    assert memory.current < weight_grad  # freed storages are uncounted
    with torch.no_grad():  # in-place ops and views return their input's storage: nothing new
        assert peak_tensor_bytes(lambda: x.add_(1).view(-1)) == 0


def test_tensor_memory_of_a_model_scales_with_the_batch():
    model = mmzoo.create(f"{IMAGE}+{TEXT}/concat", num_classes=3)
    small = _memory_row(model, 4)
    large = _memory_row(model, 16)
    assert large["infer_peak_tensor_mb"] > 2 * small["infer_peak_tensor_mb"] > 0
    assert large["train_peak_tensor_mb"] > large["infer_peak_tensor_mb"]
    assert small["weights_mb"] == large["weights_mb"] == pytest.approx(
        sum(p.numel() * 4 for p in model.parameters()) / 2**20, rel=0.01)
    assert not model.training and all(p.grad is None for p in model.parameters())


def _memory_row(model, n):
    from mmzoo.bench.measure import tensor_memory

    batch = {"image": torch.randn(n, 3, 8, 8), "text": torch.randint(1, 20, (n, 6))}
    return tensor_memory(model, batch, torch.zeros(n, dtype=torch.long), torch.device("cpu"), "fp32")


@pytest.mark.parametrize("suite", sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks").glob("*.toml")))
def test_every_committed_suite_loads_and_names_registered_parts(suite):
    """A typo in a committed suite would only surface as failed rows at the end of a long run."""
    from mmzoo.bench import load_suite

    runs = load_suite(Path(__file__).parents[1] / "benchmarks" / suite)
    assert runs
    registry = mmzoo.plugins.default_registry()
    for names, task, settings in runs:
        assert task in mmzoo.list_tasks(), (suite, task)
        for name in names:
            parsed = mmzoo.parse_name(name)
            assert parsed.fusion.name in mmzoo.list_fusions(), (suite, name)
            for part in parsed.encoders:
                assert registry.resolve("encoder", part.name) is not None, (suite, name)


def test_the_main_job_covers_three_real_tasks_with_four_fusions_each():
    from mmzoo.bench import load_suite

    runs = load_suite(Path(__file__).parents[1] / "benchmarks" / "real.toml")
    fusions = {task: {mmzoo.parse_name(n).fusion.name for n in names} for names, task, _ in runs}
    assert set(fusions) == {"icons", "reviews", "fsdd-digits"}
    assert all(len(f) >= 4 for f in fusions.values()), fusions


def test_write_results_writes_json_lines_and_the_table_beside_them(tmp_path):
    from mmzoo.bench.results import write_results

    out = tmp_path / "new" / "probe.jsonl"
    write_results(out, [{"a": 1}, {"a": 2.5}], "| a |")
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": 1}, {"a": 2.5}]
    assert (tmp_path / "new" / "probe.md").read_text() == "| a |\n"


@pytest.mark.slow
def test_a_parallel_sweep_stopped_by_sigterm_kills_its_workers_and_records_no_row(tmp_path):
    import os
    import signal
    import sys

    out, marker = tmp_path / "r.jsonl", f"mmzoo-sigterm-test-{os.getpid()}-{time.time_ns()}"

    def workers() -> list[int]:
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker.encode() in environ.read_bytes():
                    found.append(int(environ.parent.name))
            except OSError:  # gone, or not ours to read
                pass
        return found

    # 5000 epochs: the jobs would run for many minutes, so only killing them ends the sweep soon
    command = [sys.executable, "-c", "import sys; from mmzoo.cli import main; sys.exit(main())", "bench",
               f"{IMAGE}+{TEXT}/concat", f"{IMAGE}+{TEXT}/late", "--task", "digits-pair", "--no-baselines",
               "--jobs", "2", "--threads", "1", "--epochs", "5000", "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MMZOO_TEST_MARKER": marker})
    lines: list[str] = []
    try:
        for line in proc.stdout:  # both workers are training once each has reported an epoch
            lines.append(line)
            if {"[1/2]", "[2/2]"} <= {m.split()[0] for m in lines if re.match(r"  \[\d/2\]   epoch", m)}:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        lines += proc.stdout.readlines()
        deadline = time.time() + 10  # a killed process may take a moment to be reaped
        while workers() and time.time() < deadline:
            time.sleep(0.2)
        assert workers() == [], "".join(lines)
        assert read_rows(out) == []  # killed jobs leave no row: a rerun runs them
    finally:
        proc.kill()
        for pid in workers():
            os.kill(pid, signal.SIGKILL)
