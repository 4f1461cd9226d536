"""What every benchmark shares: the machine, timing, and writing results.

    info = machine_info()                 # CPU model, cores, GPU, torch, threads
    slug = machine_slug(info)             # "amd-epyc-2c" or "...-nvidia-h100-80gb-hbm3"
    with Clock(device) as c: step()       # c.wall, c.cpu (CUDA synchronised)
    run_checked(cmd, "the sweep")          # a subprocess; RuntimeError with its stderr's end
    save_results(results, Path("benchmarks/results"))   # -> <slug>.json (merged)
    write_docs(Path("docs/benchmarks.md"), Path("benchmarks/results"))

Results are one JSON file per machine: {"machine": info, "benchmarks": {name: entry}}, where
an entry is {"commit", "dirty", "date", "quick", "seconds", "result"}. A run of some benchmarks
(`--only`) replaces only their entries, so the file always holds the latest of each.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Clock",
    "entry",
    "fmt",
    "generic",
    "load_average",
    "machine_info",
    "machine_slug",
    "median",
    "peak_rss_reset",
    "peak_rss_mb",
    "rss_mb",
    "run_checked",
    "save_results",
    "sync",
    "trim_heap",
    "write_docs",
]

DOC_BEGIN, DOC_END = "<!-- bench:begin -->", "<!-- bench:end -->"


# --- the machine -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, GPU name (if CUDA works), torch version and threads."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_slug(info: dict[str, Any]) -> str:
    """File name of a machine's results: CPU model, cores, and the GPU when there is one."""
    cpu = re.sub(r"\((r|tm)\)|\bcpu\b|processor|@.*$", " ", info["cpu"], flags=re.I)
    parts = [_slug(cpu) or "cpu", f"{info['cores']}c"]
    if info.get("gpu"):
        parts.append(_slug(info["gpu"]))
    return "-".join(parts)


# --- timing and memory -------------------------------------------------------------------------
def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work, so that a clock read after it counts it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall-clock and process CPU seconds of a block (`with Clock(dev) as c: ...; c.wall`).

    CPU time counts every thread of this process and nothing of other processes: on a shared
    machine it is the steadier of the two for CPU work; on a GPU only wall time means anything.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device, self.wall, self.cpu = device, 0.0, 0.0

    def __enter__(self) -> Clock:
        sync(self.device)
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


def stamp(device: torch.device | str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds now, after the device's queued work."""
    sync(device)
    return time.perf_counter(), time.process_time()


def median(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("median of no values: the measurement took no samples")
    return float(statistics.median(values))


def rss_mb() -> float:
    """Resident set size of this process now, MiB (Linux /proc; else the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def trim_heap() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size, MiB: VmHWM (resettable) where /proc has it, else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- subprocesses ------------------------------------------------------------------------------
def run_checked(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run `cmd` with its output captured; a non-zero exit raises RuntimeError("<what> failed:
    <the last 800 characters of its stderr>")."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-800:]}")
    return done


# --- results -----------------------------------------------------------------------------------
def _git() -> dict[str, Any]:
    from experiments.store import git_info

    return git_info(Path(__file__).resolve().parent)


def save_results(
    results: dict[str, dict[str, Any]], folder: Path, info: dict[str, Any] | None = None
) -> Path:
    """Merge {name: entry} into folder/<machine>.json (other benchmarks' entries are kept)."""
    from experiments.store import atomic_write_json

    info = info or machine_info()
    path = folder / f"{machine_slug(info)}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {**old.get("benchmarks", {}), **results}
    atomic_write_json(path, {"machine": info, "benchmarks": dict(sorted(merged.items()))})
    return path


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (how busy the machine was), where known."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def entry(result: dict[str, Any], quick: bool, seconds: float) -> dict[str, Any]:
    """One benchmark's record: its result with the commit, the date, how it was run and how
    busy the machine was at its end."""
    git = _git()
    return {
        "threads": torch.get_num_threads(),
        "load_avg": load_average(),
        "commit": git["commit"],
        "dirty": git["dirty"],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "seconds": round(seconds, 1),
        "result": result,
    }


Renderer = Callable[[dict[str, Any]], list[str]]


def write_docs(doc: Path, folder: Path, renderers: dict[str, Renderer]) -> None:
    """Regenerate the part of `doc` between the bench markers from every results file.

    renderers: benchmark name -> lines of Markdown for its result (a table, mostly).
    """
    sections = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        m = data["machine"]
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
        lines = [
            f"### {path.stem}",
            "",
            f"Machine: {m['cpu']}, {m['cores']} logical cores{gpu}; torch {m['torch']}; "
            f"Python {m['python']}.",
            "",
        ]
        for name, e in data["benchmarks"].items():
            commit = (e["commit"] or "unknown")[:10] + (" (dirty)" if e.get("dirty") else "")
            mode = "quick" if e.get("quick") else "full"
            load, threads = e.get("load_avg"), e.get("threads")
            busy = f"; load average {load[1]} (5 min) on {m['cores']} cores" if load else ""
            busy = (f"; {threads} torch thread{'s' * (threads != 1)}" if threads else "") + busy
            lines += [
                f"#### {name}",
                "",
                f"Commit {commit}, {e['date']}, {mode} mode, {e['seconds']} s{busy}.",
                "",
            ]
            render = renderers.get(name)
            lines += (render(e["result"]) if render else generic(e["result"])) + [""]
        sections.append("\n".join(lines))
    body = "\n".join(sections) if sections else "No results yet: run `make bench`.\n"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{DOC_BEGIN}\n{DOC_END}\n"
    if DOC_BEGIN not in text or DOC_END not in text:
        text = text.rstrip("\n") + f"\n\n{DOC_BEGIN}\n{DOC_END}\n"
    head, rest = text.split(DOC_BEGIN, 1)
    tail = rest.split(DOC_END, 1)[1]
    doc.write_text(f"{head}{DOC_BEGIN}\n{body}\n{DOC_END}{tail}")


def generic(result: dict[str, Any]) -> list[str]:
    """A two-column table of a result's scalar values (for benchmarks without a renderer)."""
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float, str, bool))]
    return ["| quantity | value |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in rows]


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers to short strings (3 significant digits); None as a dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)
