"""The sweep: expand names, plan jobs, run each in its own process, append rows.

This module imports no torch: the parent process only plans, launches
``python -m mmzoo.bench.worker`` per job and records what comes back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mmzoo.errors import InputError

__all__ = ["DEFAULTS", "Job", "expand_names", "plan", "run_sweep", "load_suite", "read_rows",
           "append_row", "parse_shard", "split_name"]

#: settings of a job and their defaults; the ones in CONFIG_KEYS identify a
#: configuration (rows with the same name, task, seed and config_id are the same run)
DEFAULTS: dict[str, Any] = {
    "device": "cpu", "precision": "fp32", "compile": False, "channels_last": False,
    "batch_size": 64, "epochs": 10, "budget_seconds": None, "lr": 1e-3, "weight_decay": 0.01,
    "warmup": 0.05, "patience": 0, "modality_dropout": 0.0, "data": None, "task_kwargs": {},
    "seeds": 1, "timeout": 1800, "baselines": True, "baseline_fusion": "concat",
    "latency_iters": 50, "throughput_iters": 20, "threads": None,
}
CONFIG_KEYS = ("device", "precision", "compile", "channels_last", "batch_size", "epochs", "budget_seconds",
               "lr", "weight_decay", "warmup", "patience", "modality_dropout", "data", "task_kwargs")
_GLOB = set("*?[")


# ------------------------------------------------------------------ names
def _top_level_split(text: str, separator: str) -> list[str]:
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_name(name: str) -> tuple[list[str], str]:
    """``"a+b(x=1)/f"`` -> ``(["a", "b(x=1)"], "f")`` (fusion split at the last
    top-level ``/``, so ``hf:org/model`` ids stay whole)."""
    pieces = _top_level_split(name.strip(), "/")
    if len(pieces) < 2:
        raise InputError(f"{name!r} is not a model name: expected 'encoder[+encoder...]/fusion'")
    return _top_level_split("/".join(pieces[:-1]), "+"), pieces[-1]


def _ident(part: str) -> str:
    return part.split("(", 1)[0]


def _expand_part(part: str, lister: Callable[[str], list[str]], what: str) -> list[str]:
    ident = _ident(part)
    if not (_GLOB & set(ident)):
        return [part]
    matches = lister(ident)
    if not matches:
        raise InputError(f"{what} pattern {ident!r} matches nothing; see `mmzoo list {what}s`")
    return [m + part[len(ident):] for m in matches]


def expand_names(patterns: Iterable[str]) -> list[str]:
    """Expand fnmatch patterns over encoders and fusions (``"cnn+lstm/*"``)
    into model names, in order, without duplicates."""
    import mmzoo

    out: list[str] = []
    for pattern in patterns:
        encoders, fusion = split_name(pattern)
        choices = [_expand_part(e, mmzoo.list_encoders, "encoder") for e in encoders]
        fusions = _expand_part(fusion, mmzoo.list_fusions, "fusion")
        combos: list[list[str]] = [[]]
        for options in choices:
            combos = [c + [o] for c in combos for o in options]
        for combo in combos:
            for f in fusions:
                name = "+".join(combo) + "/" + f
                if name not in out:
                    out.append(name)
    return out


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
    blob = json.dumps({k: settings.get(k) for k in CONFIG_KEYS}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def row_key(row: Mapping[str, Any]) -> tuple[str, str, int, str]:
    return (row.get("name"), row.get("task"), row.get("seed"), row.get("config_id"))


def plan(names: Sequence[str], task: str, settings: Mapping[str, Any]) -> list[Job]:
    """Jobs for ``names`` on ``task``: each seed, single-input baselines first."""
    merged = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise InputError(f"unknown bench setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    jobs: list[Job] = []
    seen: set = set()
    expanded = expand_names(names)
    for seed in range(int(merged["seeds"])):
        for name in expanded:
            encoders, _ = split_name(name)
            baselines = []
            if merged["baselines"] and len(encoders) > 1:
                baselines = [f"{e}/{merged['baseline_fusion']}" for e in encoders]
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


# ------------------------------------------------------------------ JSONL
def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one JSON line atomically: one ``write`` on an ``O_APPEND`` file
    under an exclusive lock, then fsync (safe for shards sharing a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(_strict_json(row), sort_keys=True, default=str, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: torn-line check
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        if _ends_torn(fd):  # a killed writer left half a line: never glue a row onto it
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_torn(fd: int) -> bool:
    """Whether the file behind ``fd`` is non-empty and lacks a final newline."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _strict_json(value: Any) -> Any:
    """NaN/inf -> None, so every line is standard JSON for any reader."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results file (missing file: none). Lines that are not a JSON
    object (a torn line from a killed writer, a stray byte that is not UTF-8,
    a JSON array) are skipped and reported; a byte-order mark is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line_no, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            print(f"mmzoo bench: skipping unreadable line {line_no} of {path} ({exc})", file=sys.stderr)
            continue
        if not isinstance(row, dict):
            print(f"mmzoo bench: skipping line {line_no} of {path}: a {type(row).__name__}, "
                  "not a JSON object", file=sys.stderr)
            continue
        rows.append(row)
    return rows


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
    base = dict(suite.get("settings", {}))
    runs = suite.get("runs") or []
    if not runs:
        raise InputError(f"suite {path} has no [[runs]] (each with task = ... and names = [...])")
    out = []
    for i, run in enumerate(runs):
        run = dict(run)
        task, names = run.pop("task", None), run.pop("names", None)
        if not task or not names:
            raise InputError(f"suite {path}: run {i + 1} needs task = \"...\" and names = [...]")
        out.append((list(names), task, {**base, **run}))
    return out


# ------------------------------------------------------------------ running
def _git_sha() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def run_job(job: Job, *, env_extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one job in a fresh Python process; always returns a row (a failed
    row when the process raised, crashed, ran out of memory or timed out)."""
    spec = {"name": job.name, "task": job.task, "seed": job.seed, "kind": job.kind,
            "settings": job.settings, "config_id": job.config_id}
    timeout = job.settings.get("timeout") or None
    with tempfile.TemporaryDirectory(prefix="mmzoo-bench-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "row.json")
        spec_path.write_text(json.dumps(spec, default=str), encoding="utf-8")
        env = {**os.environ, **(env_extra or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        start = time.time()
        try:
            proc = subprocess.run([sys.executable, "-m", "mmzoo.bench.worker", str(spec_path), str(out_path)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
            returncode, stderr = proc.returncode, proc.stderr
            error = None
        except subprocess.TimeoutExpired as exc:
            returncode, stderr = None, (exc.stderr or b"")
            stderr = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
            error = f"timed out after {timeout} s"
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
    row.setdefault("settings", {k: job.settings.get(k) for k in CONFIG_KEYS})
    return row


def fill_gain(row: dict[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """``multimodal_gain``: test accuracy minus the best single-input
    baseline's (same task, seed and configuration), when those rows exist."""
    if row.get("status") != "ok" or not row.get("baselines"):
        return
    done = {row_key(r): r for r in rows if r.get("status") == "ok"}
    scores = []
    for name in row["baselines"]:
        base = done.get((name, row["task"], row["seed"], row["config_id"]))
        if base is None:
            return
        scores.append(base["accuracy"])
    row["best_single_accuracy"] = max(scores)
    row["multimodal_gain"] = row["accuracy"] - max(scores)


def run_sweep(names: Sequence[str], task: str, settings: Mapping[str, Any], out: str | Path, *,
              shard: tuple[int, int] | None = None, retry_failed: bool = False,
              print_fn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every job not already in ``out`` (ok rows, and failed rows unless
    ``retry_failed``); returns the rows written by this call."""
    jobs = plan(names, task, settings)
    if shard is not None:
        k, n = shard
        jobs = [job for i, job in enumerate(jobs) if i % n == k - 1]
    existing = read_rows(out)
    finished = {row_key(r) for r in existing if r.get("status") == "ok" or not retry_failed}
    todo = [job for job in jobs if job.key not in finished]
    print_fn(f"mmzoo bench: {task}: {len(jobs)} job(s){' in shard %d/%d' % shard if shard else ''}, "
             f"{len(jobs) - len(todo)} already done, {len(todo)} to run -> {out}")
    git = _git_sha()
    written = []
    for i, job in enumerate(todo, 1):
        row = run_job(job, env_extra={"MMZOO_GIT_SHA": git or ""})
        row.setdefault("env", {})["git_sha"] = git
        fill_gain(row, existing + written)
        append_row(out, row)
        written.append(row)
        if row["status"] == "ok":
            gain = row.get("multimodal_gain")
            extra = f" gain {gain:+.3f}" if gain is not None else ""
            print_fn(f"  [{i}/{len(todo)}] ok     {job.name} seed={job.seed}: acc {row['accuracy']:.3f} "
                     f"f1 {row['macro_f1']:.3f}{extra} ({row['wall_seconds']:.0f} s)")
        else:
            print_fn(f"  [{i}/{len(todo)}] FAILED {job.name} seed={job.seed}: {row.get('error', '')[:200]}")
    return written


def _atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
