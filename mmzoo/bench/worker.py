"""One benchmark job in its own process: ``python -m mmzoo.bench.worker SPEC OUT``.

Reads the job spec (JSON), measures it, and writes the row (JSON) to OUT. An
exception (including CUDA out-of-memory) becomes a failed row with the error
and the end of the traceback; the process exits 0 so the sweep goes on.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

PROGRESS = "mmzoo-progress: "  # a stderr line the parent shows as the job's progress


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m mmzoo.bench.worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    out = Path(argv[1])
    try:
        from mmzoo.bench.measure import measure

        row = measure(spec["name"], spec["task"], int(spec["seed"]), spec["settings"],
                      log=lambda msg: print(f"{PROGRESS}{msg}", file=sys.stderr, flush=True))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a row
        message = f"{type(exc).__name__}: {exc}"
        oom = "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
        row = {"status": "failed", "error": message[:2000],
               "error_type": "oom" if oom else type(exc).__name__,
               "traceback": "".join(traceback.format_exception(exc))[-4000:]}
        if isinstance(exc, KeyboardInterrupt):
            out.write_text(json.dumps(row, default=str), encoding="utf-8")
            raise
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, default=_plain), encoding="utf-8")
    tmp.replace(out)
    return 0


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
