"""The sweep: expand names, plan jobs, run each in its own process, append rows.

This module imports no torch: the parent process only plans, launches
``python -m mmzoo.bench.worker`` per job and records what comes back (the
results file itself is :mod:`mmzoo.bench.results`).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mmzoo.bench.results import append_row, check_publishable, fill_gain, git_sha, read_rows, row_key
from mmzoo.errors import InputError

__all__ = ["DEFAULTS", "Job", "expand_names", "single_input_names", "plan", "pending_jobs", "run_jobs",
           "check_jobs", "run_sweep", "load_suite", "parse_shard", "config_id"]

#: settings of a job and their defaults; the ones in CONFIG_KEYS identify a
#: configuration (rows with the same name, task, seed and config_id are the same run)
DEFAULTS: dict[str, Any] = {
    "device": "cpu", "precision": "fp32", "compile": False, "channels_last": False,
    "batch_size": 64, "epochs": 10, "budget_seconds": None, "lr": 1e-3, "weight_decay": 0.01,
    "warmup": 0.05, "patience": 0, "modality_dropout": 0.0, "data": None, "task_kwargs": {},
    "seeds": 1, "timeout": 1800, "baselines": True, "baseline_fusion": "concat",
    "latency_iters": 50, "throughput_iters": 20, "threads": None, "num_workers": 0, "augment": None,
    # corruption curves and mismatched pairs (mmzoo.robustness) on up to
    # robustness_samples test samples; levels None: mmzoo.robustness.LEVELS
    "robustness": False, "robustness_levels": None, "robustness_samples": 1000,
    # the loss and the kept epoch (mmzoo.train.FitConfig): class_weight None, "balanced" or {label: weight}
    "class_weight": None, "metric": "accuracy",
    # converted pretrained files the names use as {KEY}: {KEY: spec table} (mmzoo.converted), from the
    # suite's [pretrained.KEY] tables; part of the configuration by SHA-256 only, never by path
    "pretrained": None,
}
CONFIG_KEYS = ("device", "precision", "compile", "channels_last", "batch_size", "epochs", "budget_seconds",
               "lr", "weight_decay", "warmup", "patience", "modality_dropout", "data", "task_kwargs")
#: part of the configuration only when robustness is on (older rows keep their config_id)
ROBUSTNESS_KEYS = ("robustness", "robustness_levels", "robustness_samples")
#: part of the configuration only when set away from their defaults (older rows keep their config_id)
TRAINING_KEYS = ("class_weight", "metric")


# ------------------------------------------------------------------ names
#: glob characters stand in a pattern where the name grammar has none: each is
#: swapped for a placeholder the grammar accepts, parsed, then swapped back
_GLOB = {"*": "~~star~~", "?": "~~any~~", "[": "~~set~~", "]": "~~end~~", "!": "~~not~~"}


def _hide_globs(pattern: str) -> str:
    for ch, token in _GLOB.items():
        if token in pattern:
            raise InputError(f"name pattern {pattern!r} may not contain {token!r}")
        pattern = pattern.replace(ch, token)
    return pattern


def _show_globs(value: Any) -> Any:
    if isinstance(value, str):
        for ch, token in _GLOB.items():
            value = value.replace(token, ch)
        return value
    if isinstance(value, tuple):
        return tuple(_show_globs(v) for v in value)
    return value


def _expand_part(part, lister: Callable[[str], list[str]], what: str) -> list:
    from mmzoo.names import NamePart

    ident = _show_globs(part.name)
    kwargs = {k: _show_globs(v) for k, v in part.kwargs.items()}
    if ident == part.name:
        return [NamePart(ident, kwargs)]
    matches = lister(ident)
    if not matches:
        raise InputError(f"{what} pattern {ident!r} matches nothing; see `mmzoo list {what}s`")
    return [NamePart(match, kwargs) for match in matches]


def expand_names(patterns: Iterable[str]) -> list[str]:
    """Expand fnmatch patterns over encoders and fusions (``"cnn+lstm/*"``)
    into canonical model names (:func:`mmzoo.parse_name`, kwargs sorted and
    spelled as Python literals), in order, without duplicates."""
    import mmzoo
    from mmzoo.names import ModelName

    out: list[str] = []
    for pattern in patterns:
        parsed = mmzoo.parse_name(_hide_globs(pattern))
        choices = [_expand_part(e, mmzoo.list_encoders, "encoder") for e in parsed.encoders]
        fusions = _expand_part(parsed.fusion, mmzoo.list_fusions, "fusion")
        combos: list[list] = [[]]
        for options in choices:
            combos = [c + [o] for c in combos for o in options]
        for combo in combos:
            for fusion in fusions:
                name = str(ModelName(tuple(combo), fusion))
                if name not in out:
                    out.append(name)
    return out


def single_input_names(name: str, fusion: str) -> list[str]:
    """The single-input baselines of ``name``: each encoder with ``fusion``."""
    import mmzoo
    from mmzoo.names import ModelName, parse_part

    head = parse_part(fusion)
    return [str(ModelName((encoder,), head)) for encoder in mmzoo.parse_name(name).encoders]


# ------------------------------------------------------------------ jobs
@dataclass
class Job:
    name: str
    task: str
    seed: int
    settings: dict[str, Any]
    kind: str = "model"            # "model" or "baseline" (a single-input model)
    baselines: list[str] = field(default_factory=list)  # names of this model's single-input baselines

    @property
    def config_id(self) -> str:
        return config_id(self.settings)

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.name, self.task, self.seed, self.config_id)


def config_id(settings: Mapping[str, Any]) -> str:
    """Hash of the settings that define a run (rows with the same name, task,
    seed and config_id are the same run)."""
    keys = CONFIG_KEYS + (ROBUSTNESS_KEYS if settings.get("robustness") else ())
    keys += tuple(k for k in TRAINING_KEYS if settings.get(k, DEFAULTS[k]) != DEFAULTS[k])
    config = {k: settings.get(k) for k in keys}
    if settings.get("pretrained"):
        config["pretrained"] = {key: spec["sha256"] for key, spec in settings["pretrained"].items()}
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def plan(names: Sequence[str], task: str, settings: Mapping[str, Any]) -> list[Job]:
    """Jobs for ``names`` on ``task``: each seed, single-input baselines first."""
    merged = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise InputError(f"unknown bench setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    weighting = merged["class_weight"]
    if not (weighting is None or weighting == "balanced" or isinstance(weighting, Mapping)):
        raise InputError(f"bench setting class_weight must be 'balanced' or a table {{label = weight}}, "
                         f"got {weighting!r}")
    if merged["metric"] not in ("accuracy", "macro_f1"):
        raise InputError(f"bench setting metric must be 'accuracy' or 'macro_f1', got {merged['metric']!r}")
    from mmzoo.converted import fill_placeholders

    jobs: list[Job] = []
    seen: set = set()
    expanded = expand_names(names)
    for name in expanded:  # each {KEY} must have its spec; the names keep the placeholder, not a path
        fill_placeholders(name, merged["pretrained"] or {})
    for seed in range(int(merged["seeds"])):
        for name in expanded:
            baselines = single_input_names(name, merged["baseline_fusion"])
            if not merged["baselines"] or len(baselines) < 2:
                baselines = []
            else:
                for b in baselines:
                    job = Job(b, task, seed, merged, kind="baseline")
                    if job.key not in seen:
                        seen.add(job.key)
                        jobs.append(job)
            job = Job(name, task, seed, merged, baselines=baselines)
            if job.key not in seen:
                seen.add(job.key)
                jobs.append(job)
    return jobs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"k/n"`` (1 <= k <= n) -> (k, n)."""
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like k/n (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise InputError(f"--shard {text}: need 1 <= k <= n")
    return k, n


# ------------------------------------------------------------------ suites
def load_suite(path: str | Path) -> list[tuple[list[str], str, dict[str, Any]]]:
    """A TOML suite -> ``[(names, task, settings), ...]``.

    ::

        [settings]            # defaults for every run (see DEFAULTS)
        epochs = 8
        [[runs]]
        task = "digits-sum"
        names = ["cnn+lstm/*"]
        epochs = 12           # any setting, for this run only

        [pretrained.effnet]   # a converted file the names use as {effnet} (mmzoo.converted)
        source = "PACKAGE:PATH"
        timm = "efficientnet_lite0"
        sha256 = "..."

    A run's settings get ``pretrained = {KEY: table}`` for the keys its names use.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the backport, a conditional dependency
        import tomli as tomllib

    path = Path(path)
    try:
        suite = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read suite {path}: {exc}") from exc
    from mmzoo.converted import parse_specs, placeholders

    base = dict(suite.get("settings", {}))
    specs = parse_specs(suite.get("pretrained"), f"suite {path}")
    runs = suite.get("runs") or []
    if not runs:
        raise InputError(f"suite {path} has no [[runs]] (each with task = ... and names = [...])")
    out = []
    for i, run in enumerate(runs):
        run = dict(run)
        task, names = run.pop("task", None), run.pop("names", None)
        if not task or not names:
            raise InputError(f"suite {path}: run {i + 1} needs task = \"...\" and names = [...]")
        used = [key for name in names for key in placeholders(name)]
        unknown = sorted(set(used) - set(specs))
        if unknown:
            raise InputError(f"suite {path}: run {i + 1} ({task}) uses {', '.join('{' + k + '}' for k in unknown)} "
                             f"but the suite has no [pretrained.KEY] table for it; defined: {sorted(specs) or 'none'}")
        if used:
            run["pretrained"] = {key: dict(suite["pretrained"][key]) for key in dict.fromkeys(used)}
        out.append((list(names), task, {**base, **run}))
    return out


# ------------------------------------------------------------------ running
def run_job(job: Job, *, env_extra: Mapping[str, str] | None = None,
            progress: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run one job in a fresh Python process; always returns a row (a failed
    row when the process raised, crashed, ran out of memory or timed out).
    ``progress`` is called with each progress line the worker reports (its epochs)."""
    spec = {"name": job.name, "task": job.task, "seed": job.seed, "kind": job.kind,
            "settings": job.settings, "config_id": job.config_id}
    timeout = job.settings.get("timeout") or None
    with tempfile.TemporaryDirectory(prefix="mmzoo-bench-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "row.json")
        spec_path.write_text(json.dumps(spec, default=str), encoding="utf-8")
        env = {**os.environ, **(env_extra or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        start = time.time()
        returncode, stderr = _run_worker([sys.executable, "-m", "mmzoo.bench.worker", str(spec_path),
                                          str(out_path)], env, timeout, progress)
        error = None if returncode is not None else f"timed out after {timeout} s"
        wall = time.time() - start
        row = None
        if out_path.exists():
            try:
                row = json.loads(out_path.read_text(encoding="utf-8"))
            except ValueError:
                row = None
        if row is None:
            if error is None:
                signal = f" (signal {-returncode})" if returncode is not None and returncode < 0 else ""
                error = f"worker process exited with code {returncode}{signal} without a result"
                if returncode in (-9, 137):
                    error += "; killed, most likely out of memory"
            row = {"status": "failed", "error": error, "error_type": "crash" if "timed" not in error else "timeout",
                   "stderr_tail": stderr[-2000:] if stderr else ""}
    row.update({"name": job.name, "task": job.task, "seed": job.seed, "kind": job.kind,
                "config_id": job.config_id, "baselines": job.baselines, "wall_seconds": round(wall, 2)})
    row.setdefault("settings", {k: job.settings.get(k) for k in CONFIG_KEYS + TRAINING_KEYS})
    if job.settings.get("pretrained"):  # what the {KEY}s were, by SHA-256 (the path is this machine's)
        from mmzoo.converted import parse_specs

        row["pretrained_files"] = {key: spec.provenance() for key, spec in
                                   parse_specs(job.settings["pretrained"], "bench settings").items()}
    return row


def _run_worker(command: list[str], env: Mapping[str, str], timeout: float | None,
                progress: Callable[[str], Any] | None) -> tuple[int | None, str]:
    """Run the worker, passing its progress lines on as they come; returns its
    exit code (None when it timed out and was killed) and the end of its stderr."""
    from mmzoo.bench.worker import PROGRESS

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace", env=dict(env))
    with _running_lock:
        _running.add(proc)
    tail: collections.deque[str] = collections.deque(maxlen=200)

    def read() -> None:
        for line in proc.stderr:
            if line.startswith(PROGRESS):
                if progress is not None:
                    progress(line[len(PROGRESS):].rstrip())
            else:
                tail.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        returncode: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        returncode = None
    except BaseException:  # Ctrl-C or SIGTERM: the worker goes too
        proc.kill()
        raise
    finally:
        with _running_lock:
            _running.discard(proc)
    reader.join()
    return returncode, "".join(tail)


#: worker processes now running (killed when the sweep is interrupted)
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


def _kill_running() -> None:
    with _running_lock:
        for proc in _running:
            proc.kill()


def _eta(started: float, done: int, total: int) -> str:
    """`` (sweep ETA 3 min 20 s)`` from the mean time of the jobs finished so far."""
    if not done:
        return ""
    left = round((time.time() - started) / done * (total - done))
    return f" (sweep ETA {left // 60} min {left % 60:02d} s)" if left >= 60 else f" (sweep ETA {left} s)"


def pending_jobs(names: Sequence[str], task: str, settings: Mapping[str, Any], out: str | Path, *,
                 shard: tuple[int, int] | None = None, retry_failed: bool = False,
                 print_fn: Callable[[str], None] = print) -> list[Job]:
    """The jobs of one sweep (``names`` on ``task``, the baselines added) that
    ``out`` does not hold yet: neither an ok row nor, unless ``retry_failed``,
    a failed one; only shard ``shard`` = (k, n) of them when given. Pretrained
    files the settings declare are made (or checked) here, before any job."""
    check_publishable(out)
    planned = plan(names, task, settings)
    if planned and planned[0].settings.get("pretrained"):
        from mmzoo.converted import parse_specs, prepare_all

        for key, path in prepare_all(parse_specs(planned[0].settings["pretrained"], "bench settings")).items():
            print_fn(f"mmzoo bench: pretrained file {{{key}}} = {path}")
    if shard is not None:
        k, n = shard
        planned = [job for i, job in enumerate(planned) if i % n == k - 1]
    finished = {row_key(r) for r in read_rows(out) if r.get("status") == "ok" or not retry_failed}
    todo = [job for job in planned if job.key not in finished]
    print_fn(f"mmzoo bench: {task}: {len(planned)} job(s){' in shard %d/%d' % shard if shard else ''}, "
             f"{len(planned) - len(todo)} already done, {len(todo)} to run -> {out}")
    return todo


def run_sweep(names: Sequence[str], task: str, settings: Mapping[str, Any], out: str | Path, *,
              shard: tuple[int, int] | None = None, retry_failed: bool = False, jobs: int = 1,
              print_fn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every job of one sweep not already in ``out`` (:func:`pending_jobs`),
    ``jobs`` of them at a time (:func:`run_jobs`); returns the rows written by
    this call, in the order they finished."""
    check_jobs(jobs)
    todo = pending_jobs(names, task, settings, out, shard=shard, retry_failed=retry_failed, print_fn=print_fn)
    return run_jobs(todo, out, jobs=jobs, print_fn=print_fn)


def check_jobs(jobs: Any) -> None:
    """An :class:`~mmzoo.errors.InputError` unless ``jobs`` is a whole number >= 1."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"jobs must be a whole number >= 1 (combinations run at once), got {jobs!r}")


def run_jobs(todo: Sequence[Job], out: str | Path, *, jobs: int = 1,
             print_fn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run ``todo`` (jobs of any tasks, e.g. every sweep of a suite), ``jobs``
    at a time, each in its own process, appending each row to ``out`` as it
    finishes; returns those rows in that order. On an interrupt no job starts
    and the running workers are killed; killed jobs leave no row (a rerun runs
    them). Writing into the repository's ``benchmarks/results/`` needs a clean
    tree (:func:`~mmzoo.bench.results.check_publishable`)."""
    check_jobs(jobs)
    check_publishable(out)
    if jobs > 1 and len(todo) > 1:
        print_fn(f"mmzoo bench: {len(todo)} job(s) to run, {min(jobs, len(todo))} at a time")
    existing = read_rows(out)
    git = git_sha()
    written: list[dict[str, Any]] = []
    started = time.time()
    lock = threading.Lock()  # one row written, one message printed at a time
    stopping = threading.Event()  # interrupted: jobs killed now leave no row (a rerun runs them)

    def run_one(i: int, job: Job) -> None:
        tag = f"  [{i}/{len(todo)}]"
        with lock:
            if stopping.is_set():
                return
            print_fn(f"{tag} running {job.name} seed={job.seed}{_eta(started, len(written), len(todo))}")
        row = run_job(job, env_extra={"MMZOO_GIT_SHA": git or ""},
                      progress=lambda line: print_fn(f"{tag}   {line}"))
        with lock:
            if stopping.is_set():
                return
            row.setdefault("env", {})["git_sha"] = git
            fill_gain(row, existing + written)
            append_row(out, row)
            written.append(row)
            if row["status"] == "ok":
                gain = row.get("multimodal_gain")
                extra = f" gain {gain:+.3f}" if gain is not None else ""
                print_fn(f"{tag} ok     {job.name} seed={job.seed}: acc {row['accuracy']:.3f} "
                         f"f1 {row['macro_f1']:.3f}{extra} ({row['wall_seconds']:.0f} s)")
            else:
                print_fn(f"{tag} FAILED {job.name} seed={job.seed}: {row.get('error', '')[:200]}")

    if jobs == 1 or len(todo) < 2:
        for i, job in enumerate(todo, 1):
            run_one(i, job)
        return written
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="mmzoo-bench")
    futures = [pool.submit(run_one, i, job) for i, job in enumerate(todo, 1)]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # an error of the harness itself (a job's own failure is a row)
    except BaseException:  # Ctrl-C, SIGTERM: stop launching, kill the workers now running
        with lock:
            stopping.set()
        for future in futures:
            future.cancel()
        while not all(future.done() for future in futures):  # a job may be starting its worker just now
            _kill_running()
            wait(futures, timeout=0.1)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return written
