"""The objective: one run of an experiment in one run folder, returned as a result record.

    rec = run_trial(exp, "random", seed, {"dropout1": 0.3, ...}, runs / "trial4")
    rec = run_stn(exp, "stn", seed, runs / "stn" / "seed0")

Both reuse a finished run (its result.json), resume an interrupted one from its checkpoint, and
otherwise write spec.json first, metrics.jsonl rows while training (mirrored to W&B), and
result.json last, atomically. `seed` is the run's own (already derived) seed. A diverged run is
a result (status "diverged"); an exception is left to the caller, who records it as "failed".

Weight training is the task's (epochs, optimiser, learning rate, clipping, plateau rules) for
every method; `exp.stn` holds the STN-only settings.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fixed import TRAIN_FIELDS, FixedConfig, steps_per_epoch, train_fixed
from .progress import Progress
from .spec import Variant, to_dict
from .store import RunDir

__all__ = ["run_stn", "run_trial", "stn_config", "stn_methods"]

STN = ("stn", "delta-stn")
KEEP_CHECKPOINT = ("hyperband",)  # searchers that resume later trials from earlier ones


def stn_methods(exp: Any) -> tuple[str, ...]:
    """The methods `run_stn` runs for `exp`: stn, delta-stn and the experiment's `stn_inits`."""
    return STN + tuple(m for m in getattr(exp, "stn_inits", {}) if m not in STN)


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
    wandb: str = "off",
    device: str = "cpu",
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train the plain network at fixed hyperparameters (a search trial or a Table 1 variant).

    params: the trial's values (None: the variant's values, else the space's initial values).
    epochs: this trial's budget (None: the task's); resume_from: an earlier trial's folder or
    checkpoint (Hyperband promotion). stop_after_steps cuts the run (status "interrupted", no
    result.json) so that a later call resumes it.
    """
    run = RunDir(run_dir)
    if run.done:
        return run.read_result()
    problem = exp.task.build(seed, device)  # a missing dataset fails here, before any write
    kwargs = _variant_kwargs(variant, run.path) if variant is not None else {}
    base = kwargs.pop("values", None)
    values = dict(params) if params is not None else base
    budget = {"epochs": epochs} if epochs is not None else {}
    cfg = FixedConfig.from_task(exp.task, seed=seed, **budget)
    source = _checkpoint_of(resume_from)
    spec = {
        "method": method,
        "seed": seed,
        "params": values,
        "epochs": epochs,
        "resume_from": None if source is None else str(source),
        "variant": to_dict(variant),
        "fixed_config": dataclasses.asdict(cfg),
    }
    with _Recorder(exp, method, seed, run, spec, cfg.epochs, wandb, key="step") as rec:
        if source is None and not run.checkpoint_file.exists():
            rec.truncate(-1)  # a fresh start: rows of an attempt cut before its first checkpoint
        result = train_fixed(
            problem,
            values,
            cfg,
            log=rec.log,
            checkpoint_path=run.checkpoint_file,
            resume_from=source,
            on_resume=rec.truncate,
            stop_after_steps=stop_after_steps,
            **kwargs,
        )
        return rec.finish(result, keep_checkpoint=method in KEEP_CHECKPOINT)


def run_stn(
    exp: Any,
    method: str,
    seed: int,
    run_dir: str | Path,
    *,
    wandb: str = "off",
    device: str = "cpu",
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """One STN or Delta-STN run (method "stn", "delta-stn" or a key of `exp.stn_inits`)."""
    from stn.loop import train

    run = RunDir(run_dir)
    if run.done:
        return run.read_result()
    valid = stn_methods(exp)
    if method not in valid:
        raise ValueError(f"run_stn: unknown method {method!r}; valid: {', '.join(valid)}")
    task = exp.task
    inits = getattr(exp, "stn_inits", {}).get(method)
    if inits:
        task = dataclasses.replace(task, init={**task.init, **inits})
    problem = task.build(seed, device)
    spe = steps_per_epoch(problem)
    cfg = stn_config(exp, method, seed, device, spe, task=task)
    spec = {
        "method": method,
        "seed": seed,
        "stn_config": dataclasses.asdict(cfg),
        "init": problem.space.init(),
    }
    with _Recorder(exp, method, seed, run, spec, task.epochs, wandb, key="row") as rec:
        rec.spe = spe
        out = train(
            problem,
            cfg,
            log=rec.log,
            checkpoint_path=run.checkpoint_file,
            stop_after_steps=stop_after_steps,
        )
        return rec.finish(out.as_record(), keep_checkpoint=True)


# --- settings ----------------------------------------------------------------------------------


def stn_config(exp: Any, method: str, seed: int, device: str, steps_per_epoch: int,
               task: Any = None) -> Any:  # fmt: skip
    """The STNConfig of a run: exp.stn (with Delta-STN's preset for "delta-stn*" methods and
    `exp.searchers["delta-stn"]` overrides), the task's weight-training settings, seed, device.

    A weight-training setting changed in exp.stn (e.g. stn.lr) is refused: it belongs to the
    task, which trains the weights of every method the same way. Runs save their checkpoint at
    least once per epoch (stn.checkpoint_every_steps 0 means steps_per_epoch here), like the
    fixed loop: a SLURM job stopped by `scontrol requeue` or a node failure then loses at most
    an epoch, instead of the whole run the loop's end-only default would lose.
    """
    from stn.loop import STNConfig

    task = task if task is not None else exp.task
    default, values = dataclasses.asdict(STNConfig()), dataclasses.asdict(exp.stn)
    names = [n for n in TRAIN_FIELDS if n in values and hasattr(task, n)]
    shadowed = [n for n in names if values[n] != default[n] and values[n] != getattr(task, n)]
    if shadowed:
        keys = ", ".join(f"stn.{n} -> task.{n}" for n in shadowed)
        raise ValueError(f"weight-training settings belong to the task, set them there: {keys}")
    if method.startswith("delta-stn"):
        preset = dataclasses.asdict(STNConfig.delta_stn())
        values.update({k: v for k, v in preset.items() if v != default[k]})
        values.update(exp.searchers.get("delta-stn", {}))
    values.update({n: getattr(task, n) for n in names})
    epochs = task.epochs
    values["epochs"] = max(1, math.ceil(epochs))
    if epochs != math.ceil(epochs):  # a fractional budget: cap the steps
        cap = max(1, round(epochs * steps_per_epoch))
        values["max_steps"] = min(cap, values["max_steps"] or cap)
    values.update(seed=seed, device=str(device))
    values["checkpoint_every_steps"] = values["checkpoint_every_steps"] or steps_per_epoch
    return STNConfig.from_dict(values)


def _checkpoint_of(path: str | Path | None) -> Path | None:
    """A run folder's checkpoint file (or the file itself)."""
    if path is None:
        return None
    path = Path(path)
    return RunDir(path).checkpoint_file if path.is_dir() else path


def _variant_kwargs(variant: Variant, run_dir: Path) -> dict[str, Any]:
    """values / noise_std / sinusoid / schedule of train_fixed for a Table 1 variant."""
    out: dict[str, Any] = {
        "values": dict(variant.values) if variant.values else None,
        "noise_std": variant.noise_std,
        "sinusoid": {k: tuple(v) for k, v in (variant.sinusoid or {}).items()},
    }
    if variant.use == "values":
        return out
    src = RunDir(run_dir.parent.parent / variant.from_method / run_dir.name)
    record = src.read_result()
    if record is None or record.get("status") != "ok":
        raise ValueError(
            f"variant needs a finished {variant.from_method!r} run at {src.path} "
            f"(run method {variant.from_method} first)"
        )
    if variant.use == "final":
        out["values"] = {**(out["values"] or {}), **record.get("final_hparams", record["hparams"])}
    else:  # "schedule": the trajectory logged by the STN, from the step it took effect
        out["schedule"] = [
            (int(r["step"]), r["hparams"])
            for r in src.metrics()
            if r.get("kind") == "hyper" and r.get("hparams")
        ]
        if not out["schedule"]:
            raise ValueError(f"variant: {src.metrics_file} holds no hyperparameter trajectory")
    return out


# --- recording ---------------------------------------------------------------------------------

_SEED_DIR, _TRIAL_DIR = re.compile(r"^seed(\d+)$"), re.compile(r"^trial(\d+)$")


def _place(run_dir: Path, seed: int) -> tuple[int, int | None]:
    """(experiment seed, trial) from the run store layout .../seed<k>[/trial<id>]."""
    trial = _TRIAL_DIR.match(run_dir.name)
    seed_dir = run_dir.parent if trial else run_dir
    k = _SEED_DIR.match(seed_dir.name)
    return (int(k[1]) if k else seed), (int(trial[1]) if trial else None)


def _store_row(row: Mapping[str, Any], spe: int | None) -> dict[str, Any]:
    """STN rows ("hp/x", "sigma/x") nested as {"hparams": {...}, "sigmas": {...}} like the fixed
    loop's, with "epoch" as fractional epochs trained (steps / steps per epoch)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        group, _, name = k.partition("/")
        if name and group in ("hp", "sigma"):
            out.setdefault("hparams" if group == "hp" else "sigmas", {})[name] = v
        else:
            out[k] = v
    if spe and "step" in out:
        out["epoch"] = out["step"] / spe
    return out


def _wandb_row(row: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only, nested dicts flattened as "hparams/x"."""
    out = {}
    for k, v in row.items():
        if isinstance(v, Mapping):
            out.update({f"{k}/{n}": x for n, x in v.items() if isinstance(x, (int, float))})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    return out


class _Recorder:
    """spec.json on entry; each row to metrics.jsonl, W&B and the progress display; the result.

    key: the row field a resumed run re-logs from ("step" for the fixed loop, "row" for STN).
    """

    def __init__(self, exp: Any, method: str, seed: int, run: RunDir, spec: dict[str, Any],
                 epochs: float | None, wandb: str, key: str):  # fmt: skip
        self.run, self.key, self.spe = run, key, None
        self.truncated = False  # rows of an earlier attempt beyond its checkpoint are dropped
        k, trial = _place(run.path, seed)
        self.spec = {"experiment": to_dict(exp), **spec, "experiment_seed": k, "trial": trial}
        run.write_spec(self.spec)
        from .wandb_mirror import Mirror, run_id_for

        name = f"{method}-seed{k}" + ("" if trial is None else f"-trial{trial}")
        self.mirror = Mirror(
            wandb, project=exp.name, group=f"{method}-seed{k}", job_type=method, name=name,
            run_id=run_id_for(exp.name, method, k, trial), config=self.spec,
            tags=[method, type(exp.task).__name__, f"seed{k}"], dir=run.path,
        )  # fmt: skip
        total = math.ceil(epochs) if epochs else None
        self.progress = Progress(f"{exp.name}/{name}", total)

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.progress.close()
        self.mirror.finish(exit_code=1 if exc_type is not None else 0)

    def truncate(self, value: int) -> None:
        """Drop rows logged after the checkpoint a run resumes from (their `key` > value)."""
        if not self.truncated:
            if self.run.metrics_file.exists():
                self.run.truncate_metrics(value, key=self.key)
            self.truncated = True

    def log(self, row: dict[str, Any]) -> None:
        row = _store_row(row, self.spe)
        if self.key == "row" and not self.truncated:  # STN re-logs from its checkpoint's row
            self.truncate(row["row"] - 1)
        self.run.log(row)
        self.mirror.log(_wandb_row(row), step=int(row.get("step", 0)))
        if row.get("kind") == "eval":
            self.progress.update(_describe(row))

    def finish(self, result: dict[str, Any], keep_checkpoint: bool) -> dict[str, Any]:
        """Write result.json (unless the run was cut) and the W&B summary; return the record."""
        record = dict(result)
        if record["status"] == "interrupted":
            return record
        self.run.write_result(record)
        # the result record, so that analysis.wandb_source rebuilds result.json from W&B
        self.mirror.summary(**{f"best_{k}": record.get(k) for k in
                               ("val_loss", "test_loss", "val_metric", "test_metric")},
                            status=record["status"], epochs=record.get("epochs"),
                            wall_s=record.get("wall_s"), metric_name=record.get("metric_name"),
                            best_hparams=record.get("hparams"))  # fmt: skip
        if not keep_checkpoint:
            self.run.checkpoint_file.unlink(missing_ok=True)
        return self.run.read_result()


def _describe(row: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    keys = ("epoch", "val_loss", "val_metric", "test_loss", "wall_s")
    return " ".join(f"{k} {fmt(row[k])}" for k in keys if k in row)
