"""The benchmark harness: name patterns, planning and shards, the JSONL file,
a real 2-combination CPU sweep (each in its own process) with a failing
combination, resume, and the leaderboard's three outputs."""

from __future__ import annotations

import json
import math
import threading

import pytest

from mmzoo.bench import aggregate, append_row, expand_names, parse_shard, plan, read_rows, render, run_sweep
from mmzoo.bench.leaderboard import pareto_front
from mmzoo.bench.runner import split_name
from mmzoo.cli import main
from mmzoo.errors import InputError

TEXT = "lstm(hidden_size=16,embed_dim=16,vocab_size=300)"
IMAGE = "cnn(channels=(8,16),img_size=8)"
SETTINGS = {"epochs": 1, "batch_size": 32, "lr": 3e-3, "task_kwargs": {"limit": 100}, "threads": 1,
            "latency_iters": 5, "throughput_iters": 3, "timeout": 300}


def test_split_name_keeps_hf_ids_and_kwargs():
    assert split_name("hf:org/model+resnet18/gated") == (["hf:org/model", "resnet18"], "gated")
    assert split_name("cnn(channels=(8,16))+lstm(x='a/b+c')/film(condition='text')") == (
        ["cnn(channels=(8,16))", "lstm(x='a/b+c')"], "film(condition='text')")
    with pytest.raises(InputError, match="not a model name"):
        split_name("resnet18")


def test_expand_names_fnmatch_over_encoders_and_fusions():
    names = expand_names([f"{IMAGE}+{TEXT}/c*", "gr?/concat", "cnn+lstm/concat"])
    assert names == [f"{IMAGE}+{TEXT}/concat", f"{IMAGE}+{TEXT}/cross_attn", "gru/concat", "cnn+lstm/concat"]
    assert len(expand_names(["cnn+lstm/*"])) >= 10
    with pytest.raises(InputError, match="matches nothing"):
        expand_names(["cnn+lstm/nothing*"])


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
    "compile_s", "train_seconds", "steps", "wall_seconds",
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
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        assert row["params_total"] > 0 and row["flops_per_sample"] > 0
        assert row["latency_ms_p95"] >= row["latency_ms_p50"] > 0
        assert row["throughput_per_s"] > 0 and row["train_samples_per_s"] > 0 and row["process_max_rss_mb"] > 0
        assert "peak_memory_mb" not in row  # on CPU no per-model figure is claimed
        assert row["env"]["device"] == "cpu" and row["env"]["threads"] == 1
    fused = [r for r in ok if r["kind"] == "model"]
    assert len(fused) == 2
    for row in fused:
        assert set(row["missing_accuracy"]) == {"image", "text"}
        assert math.isclose(row["multimodal_gain"], row["accuracy"] - row["best_single_accuracy"])
    late = next(r for r in fused if r["name"].endswith("/late"))
    assert late["params_fusion"] > 0
    assert json.loads(out.read_text().splitlines()[0])["status"] == "ok"

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
    assert "| # | model | acc % |" in md and "cnn+lstm/concat" in md and "Failed runs" in md
    page = (tmp_path / "lb.html").read_text()
    assert "<script>" in page and "http://" not in page and "https://" not in page and "data-v=" in page
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["digits-pair-accuracy-vs-robustness.png", "digits-pair-accuracy-vs-throughput.png"]
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
