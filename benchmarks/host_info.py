"""What the benchmarks (and tests that measure a server) read about the machine: the CPU model their result
files name, and the processes below a server process (from /proc)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def cpu_model(fallback: str = "unknown CPU") -> str:
    """The CPU's model name as ``lscpu`` gives it, or ``fallback`` where lscpu is missing or does not say."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return fallback


def processes_of(pid: int) -> list[int]:
    """A process and every process below it (from /proc)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            todo += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            pass
    return out


def run_record(command: str) -> dict:
    """The first fields of a result file: the command, the date, the CPU and the load at the end of the run."""
    return {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model("?"),
            "cpus": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def run_line(result: dict) -> str:
    """The Markdown line that says how a result (with :func:`run_record`'s fields) was made."""
    return (f"`{result['command']}`, {result['date']}, {result['cpus']} × {result['cpu']}, load average at the end "
            + ", ".join(map(str, result["load_average"])) + " (the machine was shared with other work).")


def write_result(out: Path, result: dict, lines: list[str]) -> None:
    """``out``.json (the figures) and ``out``.md (``lines``), and the lines on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
