"""The objective: one run of an experiment in one run folder, returned as its result record.

    rec = run_trial(exp, "random", seed, {"dropout1": 0.3, ...}, runs / "trial4")
    rec = run_stn(exp, "stn", seed, runs / "stn" / "seed0")

Both reuse a finished run (its result.json), resume an interrupted one from its checkpoint, and
otherwise write spec.json first, metrics.jsonl rows while training (mirrored to W&B), and
result.json last, atomically. The run's folder is locked while it trains
(`experiments.store.lock`): a second process asked for the same run waits for the first and
then reuses its result, so no run is ever trained twice at once. `seed` is the run's own
(already derived) seed. A diverged run is a result (status "diverged" with its reason); an
exception is left to the caller, who records it as "failed" (experiments.jobs.guarded).

Weight training is the task's (epochs, optimiser, learning rate, clipping, plateau rules) for
every method; `exp.stn` holds the STN-only settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .fixed import TRAIN_FIELDS, FixedConfig, train_fixed
from .progress import Progress
from .spec import SpecError, Variant, to_dict
from .store import Busy, Place, RunDir, SearchDir, describe_holder, flatten, lock, sibling

__all__ = ["check_stn_settings", "run_stn", "run_trial", "stn_config"]


# --- the two entry points ----------------------------------------------------------------------


def run_trial(
    exp: Any,
    method: str,
    seed: int,
    params: Mapping[str, float] | None,
    run_dir: str | Path,
    *,
    epochs: float | None = None,
    resume_from: str | Path | None = None,
    variant: Variant | None = None,
    keep_checkpoint: bool = False,
    own_best: bool = False,
    retry_failed: bool = False,
    wandb: str = "off",
    device: str = "cpu",
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train the plain network at fixed hyperparameters (a search trial or a Table 1 variant).

    params: the trial's values (None: the variant's values, else the space's initial values).
    epochs: this trial's budget (None: the task's); resume_from: an earlier trial's folder
    whose checkpoint this one continues (a Hyperband promotion, a PBT member's next interval,
    with this trial's params); keep_checkpoint: leave this run's checkpoint for a later trial
    to continue from; own_best: score a continued run on its own evaluations only (PBT).
    retry_failed: a run recorded as failed (its job died) resumes from its checkpoint, its
    record kept as failed.json; a search's trials keep theirs (the searcher has seen it).
    stop_after_steps cuts the run (status "interrupted", no result.json) so that a later call
    resumes it.
    """
    run = RunDir(run_dir)
    if (rec := _reusable(run, retry_failed)) is not None:
        return rec
    problem = exp.task.build(seed, device)  # a missing dataset fails here, before any write
    kwargs = _variant_kwargs(variant, run.path) if variant is not None else {}
    base = kwargs.pop("values", None)
    values = dict(params) if params is not None else base
    budget = {"epochs": epochs} if epochs is not None else {}
    cfg = FixedConfig.from_task(exp.task, seed=seed, device=str(device), **budget)
    source = RunDir(resume_from).checkpoint_file if resume_from is not None else None
    spec = {"method": method, "seed": seed, "params": values, "epochs": epochs,
            "resume_from": None if resume_from is None else str(resume_from),
            "variant": to_dict(variant), "fixed_config": dataclasses.asdict(cfg)}  # fmt: skip
    with _claim(run, retry_failed) as done:
        if done is not None:
            return done
        with _Recorder(exp, run, spec, problem, wandb, cfg.epochs, device) as rec:
            result = train_fixed(problem, values, cfg, log=rec.log,
                                 checkpoint_path=run.checkpoint_file, resume_from=source,
                                 on_resume=rec.resume, stop_after_steps=stop_after_steps,
                                 own_best=own_best, **kwargs)  # fmt: skip
            return rec.finish(result, keep_checkpoint)


def run_stn(
    exp: Any,
    method: str,
    seed: int,
    run_dir: str | Path,
    *,
    retry_failed: bool = True,
    wandb: str = "off",
    device: str = "cpu",
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """One STN or Delta-STN run (a method of `exp.stn_methods`); a failed one resumes."""
    from stn.loop import train
    from stn.problem import steps_per_epoch

    if method not in exp.stn_methods:
        valid = ", ".join(exp.stn_methods)
        raise SpecError(f"run_stn: unknown method {method!r}; valid: {valid}")
    run = RunDir(run_dir)
    if (rec := _reusable(run, retry_failed)) is not None:
        return rec
    task = exp.task
    if inits := exp.stn_inits.get(method):
        task = dataclasses.replace(task, init={**task.init, **inits})
    problem = task.build(seed, device)
    cfg = stn_config(exp, method, seed, device, steps_per_epoch(problem), task=task)
    spec = {"method": method, "seed": seed, "stn_config": dataclasses.asdict(cfg),
            "init": problem.space.init()}  # fmt: skip
    with _claim(run, retry_failed) as done:
        if done is not None:
            return done
        with _Recorder(exp, run, spec, problem, wandb, task.epochs, device) as rec:
            out = train(problem, cfg, log=rec.log, checkpoint_path=run.checkpoint_file,
                        on_resume=rec.resume, stop_after_steps=stop_after_steps)  # fmt: skip
            return rec.finish(out, keep_checkpoint=True)


def _reusable(run: RunDir, retry_failed: bool) -> dict[str, Any] | None:
    """The run's result if it is final (not a failure to retry)."""
    rec = run.read_result()
    return None if rec is None or (retry_failed and rec["status"] == "failed") else rec


@contextlib.contextmanager
def _claim(run: RunDir, retry_failed: bool) -> Iterator[dict[str, Any] | None]:
    """Hold the run's lock; yield its result if another process finished it meanwhile, else
    None (a failed result to retry is set aside as failed.json first)."""

    def waiting(busy: Busy) -> None:
        print(f"{run.path}: waiting for {describe_holder(busy.who)}", file=sys.stderr, flush=True)

    with lock(run.path, on_wait=waiting):
        rec = run.read_result(writer=True)
        if rec is not None and retry_failed and rec["status"] == "failed":
            run.reopen_failed()
            why = rec.get("reason") or rec.get("error") or "failed"
            print(f"{run.path}: resuming a failed run ({why})", file=sys.stderr, flush=True)
            rec = None
        yield rec


# --- settings ----------------------------------------------------------------------------------


def check_stn_settings(exp: Any) -> None:
    """A weight-training setting changed in exp.stn (e.g. stn.lr) is refused: it belongs to
    the task, which trains the weights of every method the same way."""
    from stn.loop import STNConfig

    default, values = dataclasses.asdict(STNConfig()), dataclasses.asdict(exp.stn)
    names = [n for n in TRAIN_FIELDS if n in values and hasattr(exp.task, n)]
    shadowed = [n for n in names if values[n] != default[n] and values[n] != getattr(exp.task, n)]
    if shadowed:
        keys = ", ".join(f"stn.{n} -> task.{n}" for n in shadowed)
        raise SpecError(f"weight-training settings belong to the task, set them there: {keys}")


def stn_config(exp: Any, method: str, seed: int, device: str, steps_per_epoch: int,
               task: Any = None) -> Any:  # fmt: skip
    """The STNConfig of a run: exp.stn (with Delta-STN's preset for "delta-stn*" methods and
    `exp.searchers["delta-stn"]` overrides), the task's weight-training settings, seed, device.
    A fractional task.epochs caps the steps at epochs x steps_per_epoch."""
    from stn.loop import STNConfig

    check_stn_settings(exp)
    task = task if task is not None else exp.task
    default, values = dataclasses.asdict(STNConfig()), dataclasses.asdict(exp.stn)
    if method.startswith("delta-stn"):
        preset = dataclasses.asdict(STNConfig.delta_stn())
        values.update({k: v for k, v in preset.items() if v != default[k]})
        values.update(exp.searchers.get("delta-stn", {}))
    values.update({n: getattr(task, n) for n in TRAIN_FIELDS if n in values and hasattr(task, n)})
    epochs = task.epochs
    values["epochs"] = max(1, math.ceil(epochs))
    if epochs != math.ceil(epochs):  # a fractional budget: cap the steps
        cap = max(1, round(epochs * steps_per_epoch))
        values["max_steps"] = min(cap, values["max_steps"] or cap)
    values.update(seed=seed, device=str(device))
    return STNConfig.from_dict(values)


def _variant_kwargs(variant: Variant, run_dir: Path) -> dict[str, Any]:
    """values / noise_std / sinusoid / schedule of train_fixed for a Table 1 variant."""
    out: dict[str, Any] = {
        "values": dict(variant.values) if variant.values else None,
        "noise_std": variant.noise_std,
        "sinusoid": {k: tuple(v) for k, v in (variant.sinusoid or {}).items()},
    }
    if variant.use == "values":
        return out
    search = SearchDir(sibling(run_dir, variant.from_method))
    if search.exists:  # a search (PBT): its selected trial's values, or the lineage it followed
        return {**out, **_from_search(variant, search)}
    src = RunDir(sibling(run_dir, variant.from_method))
    record = src.read_result()
    if record is None or record.get("status") != "ok":
        raise ValueError(
            f"variant needs a finished {variant.from_method!r} run at {src.path} "
            f"(run method {variant.from_method} first)"
        )
    if variant.use == "final":
        out["values"] = {**(out["values"] or {}), **record.get("final_hparams", record["hparams"])}
    else:  # "schedule": the trajectory logged by the STN
        out["schedule"] = _stn_schedule(src, variant.every)
        if not out["schedule"]:
            raise ValueError(f"variant: {src.metrics_file} holds no hyperparameter trajectory")
    return out


def _stn_schedule(src: RunDir, every: str) -> list[tuple[int, dict[str, float]]]:
    """(first step, values) of an STN run's logged trajectory: each hyper step's values from
    the step they took effect ("step"), or the values of each whole epoch's evaluation from
    that epoch's first step ("epoch": the authors' retraining set, at the start of epoch e, the
    values the STN logged at the end of its epoch e)."""
    if every == "step":
        rows = src.metrics()
        return [(int(r["step"]), r["hparams"]) for r in rows if r.get("kind") == "hyper"]
    out = []
    for r in src.metrics():
        epoch = r.get("epoch") or 0
        if r.get("kind") == "eval" and epoch >= 1 and float(epoch).is_integer():
            out.append((round(r["step"] * (epoch - 1) / epoch), r["hparams"]))
    return out


def _from_search(variant: Variant, search: SearchDir) -> dict[str, Any]:
    """A variant's values ("final") or schedule ("schedule") from a finished search: those of
    the trial it selected, or the lineage that trial followed (PBT: the hyperparameters of each
    trial in the chain of checkpoints it continued, from the step that trial started at)."""
    summary = search.read_summary()
    best = (summary or {}).get("best")
    if not (summary and summary.get("finished") and best):
        raise ValueError(
            f"variant needs a finished {variant.from_method!r} search with an ok trial at "
            f"{search.path} (run method {variant.from_method} first)"
        )
    if variant.use == "final":
        return {"values": dict(best["params"])}
    steps = [seg.get("from_step") for seg in best["lineage"]]
    if any(s is None for s in steps):
        raise ValueError(f"variant: {search.summary_file} does not record the steps of the "
                         f"lineage of trial {best['trial']}")  # fmt: skip
    return {"schedule": [(int(s), dict(seg["params"])) for s, seg in zip(steps, best["lineage"])]}


# --- recording ---------------------------------------------------------------------------------


def _software(device: str) -> dict[str, Any]:
    """What of torch a run records: its version, thread count and the device's name."""
    import torch

    name = torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": name}


class _Recorder:
    """spec.json on entry; each row to metrics.jsonl, W&B and the progress display; the result."""

    def __init__(self, exp: Any, run: RunDir, spec: dict[str, Any], problem: Any, wandb: str,
                 epochs: float | None, device: str):  # fmt: skip
        from .wandb_mirror import Mirror, run_id_for

        self.run = run
        place = run.place or Place(exp.name, spec["method"], spec["seed"])
        space = [dataclasses.asdict(p) for p in problem.space]
        spec = {
            "experiment": to_dict(exp),
            **spec,
            "experiment_seed": place.seed,
            "trial": place.trial,
            "space": space,
            "data": getattr(problem, "data_info", None),
        }  # sizes, out-of-vocabulary counts
        self.spec = run.write_spec(spec, **_software(device))  # W&B's config: the same record
        name = place.name.replace(" ", "-")
        group = f"{place.method}-seed{place.seed}"
        self.mirror = Mirror(
            wandb, project=exp.name, group=group, job_type=place.method, name=name,
            run_id=run_id_for(exp.name, place.method, place.seed, place.trial), config=self.spec,
            tags=[place.method, type(exp.task).__name__, f"seed{place.seed}"], dir=run.path,
        )  # fmt: skip
        self.progress = Progress(f"{exp.name}/{name}", math.ceil(epochs) if epochs else None)

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.progress.close()
        self.mirror.finish(exit_code=1 if exc_type is not None else 0)

    def resume(self, rows: int) -> None:
        """Keep the rows the starting state had logged; it logs the later ones again."""
        self.run.keep_rows(rows)

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(row)
        self.mirror.log(flatten(row), step=int(row["step"]))
        if row["kind"] == "eval":
            self.progress.update(_describe(row))

    def finish(self, result: Any, keep_checkpoint: bool) -> dict[str, Any]:
        """Write result.json (unless the run was cut) and the W&B summary; return the record."""
        record = result.as_record()
        if record["status"] == "interrupted":
            return record
        self.run.write_result(record)
        # the result record, so that analysis.wandb_source rebuilds result.json from W&B
        self.mirror.summary(**{f"best_{k}": record.get(k) for k in
                               ("val_loss", "test_loss", "val_metric", "test_metric")},
                            status=record["status"], reason=record.get("reason"),
                            epochs=record.get("epochs"), wall_s=record.get("wall_s"),
                            spent=record.get("spent"), metric_name=record.get("metric_name"),
                            best_hparams=record.get("hparams"))  # fmt: skip
        if not keep_checkpoint:
            self.run.checkpoint_file.unlink(missing_ok=True)
        return self.run.read_result()


def _describe(row: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    keys = ("epoch", "val_loss", "val_metric", "test_loss", "wall_s")
    return " ".join(f"{k} {fmt(row[k])}" for k in keys if k in row)
