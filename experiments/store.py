"""The run store: the one module that knows where the records of a run live and how they are
written and read. Standard library only, so that `analysis` reads the store through it too.

    <runs>/<experiment>/<method>/seed<k>/             a single run (STN, a variant) ...
    <runs>/<experiment>/<method>/seed<k>/trial<id>/   ... or one trial of a search
        spec.json       resolved spec, hyperparameters, search space, seed, environment
        metrics.jsonl   one JSON object per logged row ("row" numbers them from 0)
        result.json     written last and atomically (RESULT_KEYS, plus "reason" and "spent")
        checkpoint.pt   latest resumable state (written by the training loops)
        failed.json     an earlier attempt's failed result, set aside when the run resumed
    <runs>/<experiment>/<method>/seed<k>/             a search's own records, beside its trials
        search_journal.jsonl  the searcher's asks and tells, one JSON object a line
        search.json     the summary: trials, budget spent, the selected trial (SUMMARY_FORMAT)
        jobs.json       trial id -> scheduler job id (re-attaching to SLURM jobs)
    .lock in a run or search folder: held by the one process that writes there (`lock`).

Everything above is named here only: `Place` maps a folder to (experiment, method, seed,
trial) and back, `walk` lists an experiment's units, `RunDir` and `SearchDir` read and write
one folder's records.

Read policy, the same for every record: a missing file is None; an unreadable one (cut,
empty, binary, not the expected JSON shape) is reported on stderr with its path and treated as
missing. A writer (who holds the folder's lock) also sets it aside as `<name>.corrupt`, so
the work is redone and the damaged file kept for inspection. Unreadable lines of a JSON-lines
file are reported and skipped, never cut with what follows them.

Selection and budget, one rule each: `best_trial` (the lowest finite validation loss of the
trials that finished "ok"; ties go to the earlier trial) and `spent` (what a run itself
trained: a trial continuing a parent's checkpoint counts only its own epochs and seconds).
`lineage`: the chain of trials whose checkpoints a trial continued (a PBT member's history, a
Hyperband promotion's rungs) and the hyperparameters each segment of its training used.
Analysis reads only these files, so keep old keys readable when adding new ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_KEYS",
    "STATUSES",
    "SUMMARY_FORMAT",
    "Busy",
    "Place",
    "RunDir",
    "SearchDir",
    "Unit",
    "atomic_write_bytes",
    "atomic_write_json",
    "best_trial",
    "environment",
    "flatten",
    "git_info",
    "holder",
    "lineage",
    "lock",
    "read_json",
    "sibling",
    "spent",
    "summarise",
    "unflatten",
    "unit_done",
    "verdict",
    "walk",
]

STATUSES = ("ok", "failed", "diverged")
RESULT_KEYS = ("status", "val_loss", "test_loss", "val_metric", "test_metric", "metric_name",
               "epochs", "wall_s", "hparams")  # fmt: skip
SELECTED_KEYS = ("trial", "params", "val_loss", "test_loss", "val_metric", "test_metric")
# what search.json keeps of each trial's result record
TRIAL_KEYS = ("val_loss", "test_loss", "val_metric", "test_metric", "metric_name", "epochs",
              "steps", "wall_s", "spent", "reason", "error")  # fmt: skip
# 1 (no "format" key): spent.trial_seconds counted a parent's seconds again; 2: no lineages
SUMMARY_FORMAT = 3

SPEC, METRICS, RESULT, CHECKPOINT, FAILED = (
    "spec.json", "metrics.jsonl", "result.json", "checkpoint.pt", "failed.json")  # fmt: skip
SUMMARY, JOURNAL, JOBS, LOCK = "search.json", "search_journal.jsonl", "jobs.json", ".lock"
_SEED, _TRIAL = re.compile(r"^seed(\d+)$"), re.compile(r"^trial(\d+)$")


# --- places ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a run sits in the store: (experiment, method, seed[, trial])."""

    experiment: str
    method: str
    seed: int
    trial: int | None = None

    def path(self, runs_dir: str | Path) -> Path:
        p = Path(runs_dir) / self.experiment / self.method / f"seed{self.seed}"
        return p if self.trial is None else p / f"trial{self.trial}"

    @classmethod
    def of(cls, path: str | Path) -> Place | None:
        """The place of a folder laid out as above (None for any other folder)."""
        p = Path(path)
        trial = _TRIAL.match(p.name)
        seed_dir = p.parent if trial else p
        seed = _SEED.match(seed_dir.name)
        if seed is None or len(seed_dir.parts) < 3:
            return None
        return cls(seed_dir.parent.parent.name, seed_dir.parent.name, int(seed[1]),
                   int(trial[1]) if trial else None)  # fmt: skip

    @property
    def name(self) -> str:
        """How progress lines and errors name it: method seed<k>[ trial<id>]."""
        return f"{self.method} seed{self.seed}" + (
            "" if self.trial is None else f" trial{self.trial}"
        )


def sibling(path: str | Path, method: str) -> Path:
    """The folder of `method`'s run with the same experiment and seed as the run at `path`
    (a Table 1 variant reads its STN run there)."""
    p = Path(path)
    return p.parent.parent / method / p.name


@dataclass(frozen=True)
class Unit:
    """One (method, seed) folder of an experiment: a single run, or a search and its trials."""

    place: Place
    path: Path
    kind: str  # "run" | "search"
    trials: tuple[int, ...] = ()  # trial folders present (a search)


def trial_ids(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for p in folder.iterdir() if (m := _TRIAL.match(p.name)) and p.is_dir())


def walk(runs_dir: str | Path, experiment: str) -> list[Unit]:
    """The units under `<runs_dir>/<experiment>`, by method then seed."""
    exp_dir, out = Path(runs_dir) / experiment, []
    for method_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name[0] != "."):
        seeds = sorted((int(m[1]), p) for p in method_dir.iterdir()
                       if (m := _SEED.match(p.name)) and p.is_dir())  # fmt: skip
        for seed, folder in seeds:
            trials = tuple(trial_ids(folder))
            search = bool(trials) or SearchDir(folder).exists
            out.append(Unit(Place(experiment, method_dir.name, seed), folder,
                            "search" if search else "run", trials))  # fmt: skip
    return out


# --- writing --------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """NaN and inf become null (JSON has neither); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a temporary file of the same folder, fsync it, rename it over `path`: a crash
    leaves the old file or the new one, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide records from the rest of a group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (dumps(obj) + "\n").encode())


def _append_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append JSON lines (fsynced); a line cut by an earlier crash is ended first, so it cannot
    swallow the next one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        if f.tell() and _last_byte(path) != b"\n":
            f.write(b"\n")
        f.write("".join(dumps(r, indent=None) + "\n" for r in rows).encode())
        f.flush()
        os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A row with nested objects as dotted keys: {"hparams": {"x": 1}} -> {"hparams.x": 1}.
    "hparams.x" is a hyperparameter's one name wherever rows are flat (W&B, data frames)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(row: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """`flatten` undone (with "/" for rows mirrored before the names were dotted)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        *groups, name = k.split(sep)
        d = out
        for g in groups:
            d = d.setdefault(g, {})
        d[name] = v
    return out


# --- the read policy ------------------------------------------------------------------------

_REPORTED: set[tuple[str, str, bool]] = set()


def report(path: Path, why: str, set_aside: bool = False, done: str | None = None) -> None:
    """One stderr line per damaged file and process: what is wrong and what was done."""
    done = done or (f"set aside as {path.name}.corrupt" if set_aside else "treated as missing")
    if (str(path), why, set_aside) not in _REPORTED:
        _REPORTED.add((str(path), why, set_aside))
        print(f"warning: {path} is unreadable ({why}); {done}", file=sys.stderr, flush=True)


def set_aside(path: Path) -> Path:
    """Move a damaged file to `<name>.corrupt` (`.corrupt1`, ... if taken) for inspection."""
    target, k = path.with_name(path.name + ".corrupt"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.corrupt{k}")
    os.replace(path, target)
    return target


def _why(text: bytes, expect: type, check: Callable[[Any], str | None] | None) -> tuple[Any, str]:
    """(the parsed object, "") or (None, what is wrong with `text`)."""
    if not text.strip():
        return None, "empty file"
    try:
        obj = json.loads(text.decode())
    except UnicodeDecodeError:
        return None, "not text"
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg} at line {e.lineno}"
    if not isinstance(obj, expect):
        return None, f"a JSON {type(obj).__name__}, not an object"
    why = check(obj) if check is not None else None
    return (None, why) if why else (obj, "")


Check = Callable[[Any], "str | None"]


def read_json(
    path: str | Path, *, set_aside_bad: bool = False, check: Check | None = None
) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable (see the read policy);
    `check(obj)` names what else makes it unreadable."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:  # a folder in its place, no permission
        report(path, e.strerror or type(e).__name__)
        return None
    obj, why = _why(text, dict, check)
    if why:
        report(path, why, set_aside_bad)
        if set_aside_bad:
            set_aside(path)
    return obj


def read_lines(path: Path) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The JSON-object lines of a file, and the unreadable ones (reported once)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], []
    rows, bad = [], []
    for line in raw.splitlines():
        if not line.strip():
            continue
        obj, why = _why(line, dict, None)
        (rows.append(obj) if obj is not None else bad.append(line))
    if bad:
        report(path, f"{len(bad)} unreadable line{'s' * (len(bad) > 1)}", done="skipped them")
    return rows, bad


def _check_result(rec: dict[str, Any]) -> str | None:
    missing = [k for k in RESULT_KEYS if k not in rec]
    if missing:
        return f"no {', '.join(missing)}"
    if rec["status"] not in STATUSES:
        return f"unknown status {rec['status']!r}"
    return None


# --- one run's folder -----------------------------------------------------------------------


class RunDir:
    """One run's folder and its records (the layout above)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    spec_file = property(lambda self: self.path / SPEC)
    metrics_file = property(lambda self: self.path / METRICS)
    result_file = property(lambda self: self.path / RESULT)
    checkpoint_file = property(lambda self: self.path / CHECKPOINT)
    failed_file = property(lambda self: self.path / FAILED)

    @property
    def place(self) -> Place | None:
        return Place.of(self.path)

    # spec.json
    def write_spec(self, spec: Mapping[str, Any], **software: Any) -> dict[str, Any]:
        """Record the resolved spec with the environment (`environment(**software)`); returns
        what was recorded."""
        record = {**spec, **environment(**software)}
        atomic_write_json(self.spec_file, record)
        return record

    def read_spec(self, writer: bool = False) -> dict[str, Any] | None:
        return read_json(self.spec_file, set_aside_bad=writer)

    # metrics.jsonl
    def log(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row (a crash can at worst cut the last line, which readers skip)."""
        _append_lines(self.metrics_file, [row])

    def metrics(self) -> list[dict[str, Any]]:
        return read_lines(self.metrics_file)[0]

    def keep_rows(self, n: int) -> None:
        """On (re)start: keep the first `n` rows, those the checkpoint's state had logged; later
        ones are logged again. Unreadable lines go to metrics.jsonl.corrupt, not away."""
        rows, bad = read_lines(self.metrics_file)
        if len(rows) <= n and not bad:
            return
        if bad:
            with open(self.path / (METRICS + ".corrupt"), "ab") as f:
                f.write(b"".join(line + b"\n" for line in bad))
        text = "".join(dumps(r, indent=None) + "\n" for r in rows[:n])
        atomic_write_bytes(self.metrics_file, text.encode())

    # result.json
    def write_result(self, result: Mapping[str, Any]) -> None:
        why = _check_result(dict(result))
        if why:
            raise ValueError(f"result record: {why}; keys: {', '.join(RESULT_KEYS)}, "
                             f"status one of {', '.join(STATUSES)}")  # fmt: skip
        atomic_write_json(self.result_file, result)

    def read_result(self, writer: bool = False) -> dict[str, Any] | None:
        """The result record, or None (not finished, or unreadable: see the read policy)."""
        return read_json(self.result_file, set_aside_bad=writer, check=_check_result)

    @property
    def done(self) -> bool:
        return self.read_result() is not None

    def reopen_failed(self) -> dict[str, Any] | None:
        """Set a failed result aside (as failed.json) so the run resumes from its checkpoint;
        returns that record, or None when the run did not fail."""
        rec = self.read_result(writer=True)
        if rec is None or rec.get("status") != "failed":
            return None
        os.replace(self.result_file, self.failed_file)
        return rec


# --- a search's folder ----------------------------------------------------------------------


class SearchDir:
    """A search's own records (journal, summary, job ids) and its trials' folders."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    journal_file = property(lambda self: self.path / JOURNAL)
    summary_file = property(lambda self: self.path / SUMMARY)
    jobs_file = property(lambda self: self.path / JOBS)

    @property
    def exists(self) -> bool:
        return self.journal_file.exists() or self.summary_file.exists()

    def trial(self, trial: int) -> RunDir:
        return RunDir(self.path / f"trial{trial}")

    # the journal
    def read_journal(self, writer: bool = False) -> list[dict[str, Any]]:
        """Every readable event, in order. An ask or tell of a trial already asked or told (two
        drivers appended to one journal before journals were locked) is reported and left out,
        so a replay sees each once. A writer moves unreadable lines to <journal>.corrupt."""
        events, bad = read_lines(self.journal_file)
        if bad and writer:
            with open(self.path / (JOURNAL + ".corrupt"), "ab") as f:
                f.write(b"".join(line + b"\n" for line in bad))
            text = "".join(dumps(e, indent=None) + "\n" for e in events)
            atomic_write_bytes(self.journal_file, text.encode())
        seen, out = set(), []
        for e in events:
            key = (e.get("event"), e.get("id"))
            if key in seen and key[0] in ("ask", "tell"):
                report(self.journal_file, f"repeated {key[0]} of trial {key[1]}, skipped")
                continue
            seen.add(key)
            out.append(e)
        return out

    def append_journal(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Append events; the caller holds the search's lock."""
        _append_lines(self.journal_file, events)

    # search.json
    def read_summary(self, writer: bool = False) -> dict[str, Any] | None:
        """search.json in the current format (an older one is brought up to date)."""
        summary = read_json(self.summary_file, set_aside_bad=writer, check=_check_summary)
        if summary is None or summary.get("format") == SUMMARY_FORMAT:
            return summary
        return summarise(summary, summary["trials"])

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.summary_file, summary)

    # jobs.json
    def read_jobs(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (read_json(self.jobs_file) or {}).items()}

    def write_jobs(self, jobs: Mapping[str, str]) -> None:
        atomic_write_json(self.jobs_file, dict(jobs))


def _check_summary(s: dict[str, Any]) -> str | None:
    trials = s.get("trials")
    if not isinstance(trials, list) or not all(isinstance(t, dict) and "trial" in t
                                               for t in trials):  # fmt: skip
        return "no list of trials"
    return None


# --- selection and budget -------------------------------------------------------------------


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def best_trial(trials: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The trial a search selects: finished "ok" with the lowest finite validation loss, ties
    to the earlier trial (rows with "trial" and "val_loss"; single runs: None for the trial)."""
    ok = [t for t in trials if t.get("status") == "ok" and finite(t.get("val_loss"))]
    return min(ok, key=lambda t: (t["val_loss"], t.get("trial") or 0)) if ok else None


def spent(record: Mapping[str, Any], parent: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The epochs and seconds a run trained itself. A record says so ("spent"); one written
    before it did holds its model's epochs and seconds, which for a trial that continued a
    parent's checkpoint include the parent's: those are taken off."""
    own = record.get("spent")
    if isinstance(own, Mapping) and finite(own.get("epochs")) and finite(own.get("seconds")):
        return {"epochs": float(own["epochs"]), "seconds": float(own["seconds"])}
    out = {"epochs": _num(record.get("epochs")), "seconds": _num(record.get("wall_s"))}
    if parent is not None:
        out["epochs"] -= _num(parent.get("epochs"))
        out["seconds"] -= _num(parent.get("wall_s"))
    return {k: max(v, 0.0) for k, v in out.items()}


def _num(x: Any) -> float:
    return float(x) if finite(x) else 0.0


def trial_row(trial: int, suggestion: Mapping[str, Any], record: Mapping[str, Any] | None,
              parent: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """search.json's row of a trial: what was asked, and what its result record holds."""
    row = {"trial": trial, **{k: suggestion.get(k) for k in ("params", "budget", "resume_from",
                                                             "seed")}}  # fmt: skip
    if record is None:
        return {**row, "status": "pending"}
    row.update(status=record.get("status"), **{k: record[k] for k in TRIAL_KEYS if k in record})
    row["spent"] = spent(record, parent)
    return row


def lineage(trials: Iterable[Mapping[str, Any]], trial: int) -> list[dict[str, Any]]:
    """The schedule trial `trial` followed: the chain of trials whose checkpoints it continued
    (by "resume_from"), root first, each with its "params" and the part of the training it did,
    from its parent's end to its own: "from_epoch", "to_epoch", "from_step", "to_step" (None
    where a record does not say, e.g. steps in summaries written before they were kept)."""
    by_id = {t["trial"]: t for t in trials}
    chain, seen, t = [], set(), by_id.get(trial)
    while t is not None and t["trial"] not in seen:
        seen.add(t["trial"])
        chain.append(t)
        t = by_id.get(t.get("resume_from"))
    out, start = [], {"epoch": 0.0, "step": 0}
    for t in reversed(chain):
        end = {"epoch": t.get("epochs") if finite(t.get("epochs")) else None,
               "step": t.get("steps") if finite(t.get("steps")) else None}  # fmt: skip
        out.append({"trial": t["trial"], "params": t.get("params"), "from_epoch": start["epoch"],
                    "to_epoch": end["epoch"], "from_step": start["step"],
                    "to_step": end["step"]})  # fmt: skip
        start = end
    return out


def summarise(header: Mapping[str, Any], trials: list[Mapping[str, Any]]) -> dict[str, Any]:
    """search.json from its header (experiment, method, seed, spec, budget, searcher, finished,
    spent.seconds: the search's wall clock, ...) and its trial rows: the spent budget and the
    selected trial follow from the rows, by `spent` and `best_trial`; the selected trial's
    `lineage` is its "lineage". A search whose trials continue other trials' checkpoints also
    gets "lineages": the lineage of every told trial that no other trial continues (a PBT
    member's, or a branch that ended), by trial id."""
    by_id = {t["trial"]: t for t in trials}
    rows = []
    for t in trials:
        parent = by_id.get(t.get("resume_from"))
        rows.append({**t, "spent": spent(t, parent)} if t.get("status") != "pending" else dict(t))
    told = [r for r in rows if r.get("status") != "pending"]
    best = best_trial(rows)
    old = dict(header.get("spent") or {})
    out = {
        **header,
        "format": SUMMARY_FORMAT,
        "trials": rows,
        "spent": {
            "trials": len(told),
            "epochs": sum(r["spent"]["epochs"] for r in told),
            "trial_seconds": sum(r["spent"]["seconds"] for r in told),
            "seconds": old.get("seconds", 0.0),  # the search's own wall clock
        },
        "best": best
        and {
            **{k: best.get(k) for k in SELECTED_KEYS},
            "lineage": lineage(rows, best["trial"]),
        },  # fmt: skip
    }
    continued = {r.get("resume_from") for r in rows} - {None}
    if continued:
        leaves = [r["trial"] for r in told if r["trial"] not in continued]
        out["lineages"] = {str(t): lineage(rows, t) for t in leaves}
    else:
        out.pop("lineages", None)  # a header carried over from an older summary
    return out


def unit_done(path: str | Path) -> bool:
    """A run folder with its result, or a search folder whose search.json says it finished
    (a Table 1 variant waits for the run or search it replays)."""
    if RunDir(path).done:
        return True
    summary = SearchDir(path).read_summary()
    return bool(summary and summary.get("finished"))


def verdict(outcome: dict[str, Any]) -> dict[str, Any]:
    """A unit's outcome as one record: a run's result, or a search's selected trial ("none-ok"
    when no trial finished ok); "reason" says why a run failed or diverged, or why none of a
    search's trials was ok (the last one's reason, and how many failed or diverged)."""
    if "trials" not in outcome:
        return {**outcome, "reason": outcome.get("reason") or outcome.get("error")}
    best = outcome.get("best")
    if best:
        return {**best, "status": "ok", "reason": None}
    bad = [t for t in outcome["trials"] if t.get("status") in ("failed", "diverged")]
    counts = ", ".join(f"{sum(t['status'] == s for t in bad)} {s}" for s in ("failed", "diverged"))
    last = (bad[-1].get("reason") or bad[-1].get("error")) if bad else None
    why = f"{counts}; last: {last}" if bad else outcome.get("stop_reason")
    return {"status": "none-ok", "reason": why}


# --- locks ----------------------------------------------------------------------------------


class Busy(ValueError):
    """A run or search folder is being written by another process (one-line message)."""

    def __init__(self, folder: Path, who: Mapping[str, Any]):
        self.folder, self.who = folder, dict(who)
        super().__init__(f"{folder} is in use by {describe_holder(who)}")


def describe_holder(who: Mapping[str, Any]) -> str:
    since = who.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {who.get('pid', '?')} on {who.get('host', '?')}{when} ({who.get('command', '?')})"


@contextlib.contextmanager
def lock(folder: str | Path, *, wait: bool = True,
         on_wait: Callable[[Busy], None] | None = None) -> Iterator[None]:  # fmt: skip
    """Hold `<folder>/.lock` (fcntl.flock) while writing the folder: one writer per run and
    per search. Held by another process: wait for it (calling `on_wait` once), or raise Busy.
    The kernel releases the lock when its holder dies, however it dies."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = Busy(folder, holder(folder) or {})
            if not wait:
                raise busy from None
            if on_wait is not None:
                on_wait(busy)
            fcntl.flock(fd, fcntl.LOCK_EX)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3),
              "command": " ".join(sys.argv)[:300]}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(folder: str | Path) -> dict[str, Any] | None:
    """Who holds the folder's lock ({pid, host, since, command}), or None when nobody does.
    Writes nothing."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                who = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                who = {}
            return who if isinstance(who, dict) else {}
        return None
    finally:
        os.close(fd)


# --- the environment ------------------------------------------------------------------------


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """The commit of the code that runs, and whether the tree had uncommitted changes."""
    cwd = cwd or Path(__file__).resolve().parent
    try:

        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                  timeout=10).stdout  # fmt: skip

        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": commit or None, "dirty": bool(dirty.strip()) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
               "SLURM_RESTART_COUNT", "SLURM_JOB_PARTITION")  # fmt: skip


def environment(**software: Any) -> dict[str, Any]:
    """What a run records of where it ran: git, host, SLURM ids, and under "env" the Python,
    platform and CPU model with `software` (the loops pass torch's version, its thread count
    and the device): the same seed gives the same result on the same machine and threads."""
    slurm = {k: os.environ[k] for k in _SLURM_VARS if k in os.environ}
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu_model(), **software}  # fmt: skip
    return {"git": git_info(), "host": socket.gethostname(), "slurm": slurm, "env": env}
