"""The same tables as the run store, read from W&B: online through the public API, or from the
offline run files (`wandb/offline-run-*/run-<id>.wandb`) that runs write with `--wandb offline`.

    loaded = load_wandb("digits-mlp", wandb_dir="runs/digits-mlp")      # offline files
    loaded = load_wandb("digits-mlp", path="my-team/digits-mlp")        # online

What a run mirrors (experiments/objective.py): config = the run's spec.json (method, seed,
experiment_seed, trial, experiment, space, env); history = its metrics rows, numbers only,
nested dicts flattened as "hparams.x" (runs mirrored before: "hparams/x"), on our own "step"
axis; summary = best_val_loss, best_test_loss, best_val_metric, best_test_metric (the result's
values), status, reason, epochs, wall_s, spent, metric_name, best_hparams. Both paths give
`RunLike` objects, and one function (`to_frames`) turns those into the tables `analysis.load`
builds from the store, with the same row functions.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.store import Place, flatten, unflatten

from .load import (
    Loaded,
    StoreError,
    experiment_spec,
    mark_selected,
    metrics_frame,
    run_row,
    runs_frame,
    space_of,
)

__all__ = [
    "RunLike",
    "load_wandb",
    "offline_runs",
    "online_runs",
    "read_offline_run",
    "read_records",
    "to_frames",
]

_BLOCK, _HEADER = 32768, 7  # LevelDB log: 32 KiB blocks; file and record headers are 7 bytes
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
RESULT_NUMBERS = ("val_loss", "test_loss", "val_metric", "test_metric")


@dataclass
class RunLike:
    """What W&B holds of one run, in the shape the public API returns it."""

    id: str  # where it came from: "entity/project/id" or an offline file
    config: dict[str, Any]  # values unwrapped (no {"value": ...})
    summary: dict[str, Any]  # like Run.summary_metrics: nested dicts for nested keys
    history: list[dict[str, Any]] = field(default_factory=list)  # logged rows, as scan_history
    state: str = "finished"  # finished | failed | crashed | running (W&B's run states)


# --- offline run files ---------------------------------------------------------------------


def read_records(path: str | Path) -> Iterator[Any]:
    """The `wandb_internal_pb2.Record` protobufs of one .wandb file, in order.

    Format: a 7-byte header (":W&B", version), then LevelDB-log records in 32 KiB blocks, each
    with a 7-byte header (crc32, length, type: FULL, or FIRST/MIDDLE/LAST pieces of a record
    that spans blocks). A torn tail (a run still writing, or killed) ends the iteration."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, buf = Path(path).read_bytes(), _HEADER, b""
    if raw[:4] != b":W&B":
        raise StoreError(f"{path} is not a W&B run file (no ':W&B' header)")
    while pos + _HEADER <= len(raw):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, n, kind = struct.unpack("<IHB", raw[pos : pos + _HEADER])
        if kind == 0 or pos + _HEADER + n > len(raw):  # zero padding, or a cut record
            if kind == 0 and n == 0:
                pos += _BLOCK - pos % _BLOCK
                continue
            return
        piece, pos = raw[pos + _HEADER : pos + _HEADER + n], pos + _HEADER + n
        buf = piece if kind in (_FULL, _FIRST) else buf + piece
        if kind in (_FULL, _LAST):
            record = pb.Record()
            try:
                record.ParseFromString(buf)
            except DecodeError:
                return
            buf = b""
            yield record


def _key(item: Any) -> str:
    """An item's key: `key`, or its `nested_key` parts joined by "/"."""
    return item.key or "/".join(item.nested_key)


def _value(item: Any) -> Any:
    """A history/summary/config item's value: a typed field when set, else its JSON."""
    typed = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if typed == "none":
        return None
    if typed is not None:
        v = getattr(item, typed)
        return json.loads(v) if typed == "json" else v
    return json.loads(item.value_json)


def _set_nested(d: dict, item: Any, value: Any) -> None:
    parts = list(item.nested_key) if not item.key else [item.key]
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def read_offline_run(path: str | Path) -> RunLike:
    """One offline run file as a RunLike (state "running" if it holds no exit record)."""
    run_id, config, summary, history, state = Path(path).stem[4:], {}, {}, [], "running"
    for r in read_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run_id = r.run.run_id or run_id
            config.update({_key(i): _value(i) for i in r.run.config.update})
        elif kind == "config":
            config.update({_key(i): _value(i) for i in r.config.update})
        elif kind == "history":
            history.append({_key(i): _value(i) for i in r.history.item})
        elif kind == "summary":
            for i in r.summary.update:
                _set_nested(summary, i, _value(i))
        elif kind == "exit":
            state = "finished" if r.exit.exit_code == 0 else "failed"
    config.pop("_wandb", None)
    return RunLike(str(path), config, summary, history, state)


def _merge(parts: list[RunLike]) -> RunLike:
    """The offline files of one run id (a resumed run writes a new one), oldest first."""
    out = RunLike(parts[-1].id, {}, {}, [], parts[-1].state)
    for p in parts:
        out.config.update(p.config)
        out.summary.update(p.summary)
        out.history += p.history
    return out


def offline_runs(wandb_dir: str | Path) -> list[RunLike]:
    """Every offline run under `wandb_dir` (searched recursively, e.g. a run store), the files
    of a resumed run merged in the order they were written."""
    root = Path(wandb_dir)
    if not root.is_dir():
        raise StoreError(f"no folder {wandb_dir} (--wandb-dir: a folder holding wandb/ runs)")
    files: dict[str, list[Path]] = {}
    for f in root.rglob("run-*.wandb"):
        if f.parent.name.startswith("offline-run-"):
            files.setdefault(f.stem[4:], []).append(f)
    # folder names are offline-run-<YYYYmmdd_HHMMSS>-<id>: by name is by start time
    return [_merge([read_offline_run(f) for f in sorted(fs, key=lambda f: f.parent.name)])
            for _, fs in sorted(files.items())]  # fmt: skip


# --- the public API ------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Nested mappings (the API's summary objects) as plain dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def online_runs(path: str, experiment: str, *, api: Any = None, filters: dict | None = None,
                all_histories: bool = False) -> list[RunLike]:  # fmt: skip
    """The runs of `experiment` in the W&B project `path` ("entity/project" or "project"),
    with full histories through `scan_history` (not the sampled `history`) for single runs
    (all runs with all_histories: a search's trials cost one request each)."""
    if api is None:
        import wandb

        try:
            api = wandb.Api(timeout=60)
        except Exception as e:  # no key, bad settings: say so in one line
            raise StoreError(f"W&B API unavailable: {type(e).__name__}: {_line(e)}") from None
    filters = {"config.experiment.name": experiment} if filters is None else filters
    out = []
    try:
        for run in api.runs(path, filters=filters):
            config = _plain(run.config)
            if experiment_spec(config).get("name") != experiment:
                continue
            keep = all_histories or config.get("trial") is None
            history = [dict(row) for row in run.scan_history()] if keep else []
            summary = _plain(getattr(run, "summary_metrics", None) or run.summary)
            out.append(RunLike(f"{path}/{run.id}", config, summary, history, run.state))
    except StoreError:
        raise
    except Exception as e:  # network, permissions, unknown project
        raise StoreError(f"W&B runs of {path}: {type(e).__name__}: {_line(e)}") from None
    return out


def _line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


# --- RunLike -> the store's tables ---------------------------------------------------------


def _replay(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the store keeps them: a resumed run re-logs from its checkpoint, and the store
    drops the rows logged after that checkpoint; here a row whose step goes back drops the
    earlier rows at or after its step."""
    out: list[dict[str, Any]] = []
    for row in rows:
        step = row.get("step")
        if step is not None and out and out[-1].get("step", -1) > step:
            out = [r for r in out if r.get("step", -1) < step]
        out.append(row)
    return out


def _store_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A history row as metrics.jsonl holds it: W&B's own keys ("_step", ...) dropped, "a.b"
    (or "a/b") nested again, and the row's kind, which the mirror (numbers only) leaves out,
    from the keys each kind of row has (stn/loop.py, experiments/fixed.py)."""
    kept = {
        k.replace("/", "."): v for k, v in row.items() if not k.startswith("_") and v is not None
    }
    out = unflatten(kept)
    kind = next((k for key, k in (("val_loss", "eval"), ("hyper_step", "hyper"),
                                  ("train_loss", "train")) if key in out), None)  # fmt: skip
    return out | ({"kind": kind} if kind else {})


def _best_hparams(run: RunLike, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The summary's best_hparams; for runs mirrored without it, a fixed-hyperparameter run's
    config params, else the hparams of the evaluation row with the lowest validation loss."""
    n = len("best_hparams.")  # nested in the summary, or flat "best_hparams/x" (older runs)
    flat = flatten(run.summary)
    best = {k[n:]: v for k, v in flat.items() if k[:n] in ("best_hparams.", "best_hparams/")}
    if best:
        return best
    if isinstance(run.config.get("params"), Mapping):
        return dict(run.config["params"])
    evals = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
    return dict(min(evals, key=lambda r: r["val_loss"]).get("hparams") or {}) if evals else None


def _result(run: RunLike, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's result record (result.json) from its summary; None while it runs."""
    s = run.summary
    if "status" not in s:
        if run.state not in ("failed", "crashed", "killed"):
            return None
        # the driver records an exception as "failed", with the trial's params (driver.py)
        return {"status": "failed", "reason": f"W&B run {run.state}", "epochs": 0.0,
                "wall_s": s.get("_runtime"), "hparams": run.config.get("params")}  # fmt: skip
    walls = [r["wall_s"] for r in rows if isinstance(r.get("wall_s"), (int, float))]
    return {
        **{k: s.get(f"best_{k}") for k in RESULT_NUMBERS},
        "status": s["status"],
        "reason": s.get("reason"),
        "spent": s.get("spent"),
        "metric_name": s.get("metric_name"),
        "epochs": s.get("epochs"),
        "wall_s": s.get("wall_s", max(walls, default=None)),
        "hparams": _best_hparams(run, rows),
    }


def to_frames(runs: Iterable[RunLike], experiment: str, all_histories: bool = False) -> Loaded:
    """The tables `analysis.load.load_local` gives for the same runs: one row per run, the
    metrics rows of single runs (of every run with all_histories), the experiment's spec."""
    done, parts, spec, space = [], [], {}, {}
    for run in runs:
        exp = experiment_spec(run.config)
        if exp.get("name") != experiment or "method" not in run.config:
            continue  # another experiment's run, or not one of ours
        spec, space = spec or exp, space or space_of(run.config)
        seed = run.config.get("experiment_seed", run.config.get("seed"))
        method, trial = run.config["method"], run.config.get("trial")
        history = [_store_row(r) for r in _replay(run.history)]
        done.append((run, method, seed, trial, _result(run, history)))
        if all_histories or trial is None:
            parts.append((method, seed, trial, history))
    if not done:
        raise StoreError(f"no W&B runs of {experiment!r} found")
    records = {(m, k, t): rec for _, m, k, t, rec in done}
    rows = []
    for run, method, seed, trial, rec in done:
        parent = Place.of(run.config.get("resume_from") or "")  # a Hyperband promotion's
        parent_rec = records.get((method, seed, parent.trial)) if parent else None
        env = run.config.get("env") if isinstance(run.config.get("env"), Mapping) else None
        rows.append(run_row(experiment, method, seed, trial, rec, f"wandb:{run.id}",
                            parent=parent_rec, env=env,
                            resume_from=parent.trial if parent else None))  # fmt: skip
    parts.sort(key=lambda p: (p[0], p[1], -1 if p[2] is None else p[2]))  # as load_metrics
    return Loaded(runs_frame(mark_selected(rows)), metrics_frame(parts), spec, space)


def load_wandb(experiment: str, *, wandb_dir: str | Path | None = None, path: str | None = None,
               api: Any = None, all_histories: bool = False) -> Loaded:  # fmt: skip
    """One experiment's tables from offline run files under `wandb_dir`, or else online from
    the W&B project `path` (default: the project named after the experiment)."""
    if wandb_dir is not None:
        runs = offline_runs(wandb_dir)
        if not runs:
            raise StoreError(
                f"no offline W&B runs (wandb/offline-run-*/run-*.wandb) under "
                f"{wandb_dir}: were the runs started with --wandb offline?"
            )
    else:
        runs = online_runs(path or experiment, experiment, api=api, all_histories=all_histories)
    return to_frames(runs, experiment, all_histories)
