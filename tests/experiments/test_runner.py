"""run_experiment on toy objectives: ordering of variants after STN, reuse, stale folders, bad
input before any write, the local launcher (subprocesses) and progress lines."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pytest

from experiments.progress import Progress
from experiments.runner import run_experiment
from experiments.spec import Budget, Experiment, SpecError, Variant, apply_overrides
from experiments.status import status
from experiments.store import RunDir
from slurm.executors import Launch
from stn.space import HParam, Space

# Local jobs unpickle the toy objectives in a fresh process that cannot import this test file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class ToyTask:
    epochs: float = 1.0
    offset: float = 0.0
    data_dir: str = "present"

    def space(self) -> Space:
        return Space.of(HParam("x", -1.0, 1.0, 0.5))

    def check_data(self) -> None:
        if self.data_dir != "present":
            raise SpecError(f"toy data missing in {self.data_dir}")


@dataclass(frozen=True)
class ToySTN:
    hyper_lr: float = 0.01


def _record(run_dir: Path, exp, params: dict, method: str) -> dict:
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    with open(run.path / "starts.txt", "a") as f:  # how often a job ran it, finished or not
        f.write("start\n")
    if run.done:
        return run.read_result()
    spec = {"experiment": {"task": dataclasses.asdict(exp.task)}, "params": params}
    run.write_spec(spec)
    val = (params["x"] - 0.2) ** 2 + exp.task.offset
    run.log({"step": 1, "val_loss": val, "hparams": params})
    rec = {"status": "ok", "val_loss": val, "test_loss": val, "val_metric": 0.5, "test_metric": 0.5,
           "metric_name": "accuracy", "epochs": 1.0, "wall_s": 0.0, "hparams": params}  # fmt: skip
    run.write_result(rec)
    return rec


def toy_stn(exp, method, seed, run_dir, *, wandb="off", device="cpu"):
    return _record(run_dir, exp, {"x": 0.25}, method)


def toy_trial(exp, method, seed, params, run_dir, *, epochs=None, resume_from=None, variant=None,
              keep_checkpoint=False, retry_failed=False, own_best=False, wandb="off",
              device="cpu"):  # fmt: skip
    if variant is not None:  # "final": the STN's final value, read from its run folder
        src = RunDir(Path(run_dir).parent.parent / variant.from_method / Path(run_dir).name)
        params = src.read_result()["hparams"]
    return _record(run_dir, exp, params, method)


OBJECTIVES = {"stn": toy_stn, "trial": toy_trial}


def toy_exp(launcher: str = "debug") -> Experiment:
    return Experiment(
        "toy", "a test", ToyTask(), ToySTN(), ("stn", "random", "stn-final"), seeds=(0, 1),
        budget=Budget(trials=3, parallel=2), launch=Launch(launcher=launcher),
        variants={"stn-final": Variant(from_method="stn", use="final")},
    )  # fmt: skip


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".submitit" not in p.parts}


def test_runs_every_method_and_seed_then_reuses_them(tmp_path, capsys):
    out = run_experiment(toy_exp(), runs_dir=tmp_path, objectives=OBJECTIVES, bar=False)
    assert set(out) == {(m, s) for m in ("stn", "random", "stn-final") for s in (0, 1)}
    for s in (0, 1):
        assert out[("stn", s)]["status"] == "ok"
        assert out[("stn-final", s)]["hparams"] == {"x": 0.25}  # ran after its STN run
        assert len(out[("random", s)]["trials"]) == 3 and out[("random", s)]["finished"]
        for t in range(3):
            trial = tmp_path / "toy" / "random" / f"seed{s}" / f"trial{t}"
            assert {p.name for p in trial.iterdir()} >= {
                "spec.json",
                "metrics.jsonl",
                "result.json",
            }
    lines = capsys.readouterr().err.splitlines()
    assert sum("random seed" in line and "trial" in line for line in lines) == 6
    rows = {(r["method"], r["seed"]): r for r in status(tmp_path, "toy")}
    assert rows[("stn", 1)]["status"] == "ok" and rows[("stn-final", 0)]["kind"] == "run"
    search = rows[("random", 0)]
    assert (search["done"], search["running"], search["failed"], search["planned"]) == (3, 0, 0, 3)
    assert search["best_val_loss"] == out[("random", 0)]["best"]["val_loss"]
    before = files(tmp_path)
    again = run_experiment(toy_exp(), runs_dir=tmp_path, objectives=OBJECTIVES, bar=False)
    assert again[("random", 1)]["trials"] == out[("random", 1)]["trials"]
    assert files(tmp_path) == before
    starts = list(tmp_path.rglob("starts.txt"))
    assert len(starts) == 2 * 5 and {p.read_text() for p in starts} == {"start\n"}  # no reruns


def test_methods_and_seeds_select_units_and_smoke_applies(tmp_path):
    exp = apply_overrides(toy_exp(), {"smoke": {"task.offset": 1.0}})
    out = run_experiment(exp, ["stn"], [3], tmp_path, objectives=OBJECTIVES, smoke=True)
    assert list(out) == [("stn", 3)] and out[("stn", 3)]["val_loss"] == pytest.approx(1.0025)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"methods": ["sgd"]}, "unknown method 'sgd'; valid: stn, delta-stn, fixed, grid, random"),
        ({"methods": []}, "the method list is empty"),
        ({"seeds": []}, "the seed list is empty"),
        ({"methods": ["stn", "random", "stn"]}, "repeated methods ['stn', 'random', 'stn']"),
        ({"overrides": ["budget.trials=-2"]}, "budget.trials must be positive"),
        ({"overrides": ["task.epoch=2"]}, "valid: name, reproduces, task.epochs"),
        ({"launcher": "cloud"}, "unknown launcher 'cloud'"),
        ({"wandb": "maybe"}, "unknown wandb mode 'maybe'; valid: off, offline, online"),
        ({"methods": ["stn-final"]}, "needs the finished 'stn' run of seed 0; add stn"),
        ({"overrides": ["task.data_dir=elsewhere"]}, "toy data missing in elsewhere"),
        ({"overrides": ['searchers={"bo": {"kappa": 2}}'], "methods": ["bo"]}, "unknown option"),
    ],
)
def test_bad_input_raises_before_anything_is_written(tmp_path, kwargs, needle):
    with pytest.raises(SpecError) as e:
        run_experiment(toy_exp(), runs_dir=tmp_path, objectives=OBJECTIVES, **kwargs)
    assert needle in str(e.value)
    assert not any(tmp_path.iterdir())


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    for where in ("runs", "runs/sub"):
        with pytest.raises(SpecError, match=f"--runs-dir .*{where}: .*runs is not a folder"):
            run_experiment(toy_exp(), runs_dir=tmp_path / where, objectives=OBJECTIVES)
    assert (tmp_path / "runs").read_text() == "not a folder"


def test_run_folders_of_another_spec_are_not_reused(tmp_path):
    run_experiment(toy_exp(), ["stn", "random"], [0], tmp_path, objectives=OBJECTIVES)
    before = files(tmp_path)
    for method in ("stn", "random"):
        with pytest.raises(SpecError, match=r"different spec \(changed: task\)"):
            run_experiment(toy_exp(), [method], [0], tmp_path, objectives=OBJECTIVES,
                           overrides=["task.offset=2"])  # fmt: skip
    assert files(tmp_path) == before
    # budgets may change: a finished search is extended, not refused
    more = run_experiment(toy_exp(), ["random"], [0], tmp_path, objectives=OBJECTIVES,
                          overrides=["budget.trials=4"])  # fmt: skip
    assert len(more[("random", 0)]["trials"]) == 4


def test_status_counts_queued_trials_from_the_journal(tmp_path):
    folder = tmp_path / "toy" / "bo" / "seed0"
    _record(folder / "trial0", toy_exp(), {"x": 0.2}, "bo")  # done, val_loss 0
    (folder / "search_journal.jsonl").write_text(
        "".join(json.dumps({"event": "ask", "id": i, "params": {"x": 0.2}}) + "\n" for i in (0, 1))
    )
    (row,) = status(tmp_path, "toy")
    assert (row["kind"], row["done"], row["running"], row["best_val_loss"]) == ("search", 1, 1, 0)


# --- the real experiments' smoke variants --------------------------------------------------

# Through `local` each job is a fresh process (~2-3 s of imports), so there one or two methods
# per experiment, together covering a variant, extra STN starts and searches (the CLI test
# runs digits STN through `local`).
LOCAL_METHODS = {
    "digits-mlp": ["fixed"],
    "cifar10-alexnet": ["random"],
    "ptb-lstm": ["random"],
    "ptb-output-dropout": ["fixed-68"],
    "ptb-schedule-init": ["stn-init05"],
}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> dict[str, Path]:
    """Small CIFAR-10 and PTB files in the real formats (experiments.data.synthetic)."""
    from experiments.data.synthetic import write_cifar10, write_ptb

    root = tmp_path_factory.mktemp("data")
    return {"cifar10": write_cifar10(root / "cifar10", n_train=100, n_test=20),
            "ptb": write_ptb(root / "ptb", n_lines=60, vocab=50)}  # fmt: skip


def smoke_overrides(name: str, data_dirs: dict[str, Path]) -> list[str]:
    for prefix, folder in data_dirs.items():
        if name.startswith(prefix):
            return [f"task.data_dir={folder}"]
    return []


def check_complete(folder: Path) -> None:
    """A finished run folder: spec.json, metrics rows with hyperparameters, result.json ok."""
    run = RunDir(folder)
    assert run.read_spec()["experiment"]["name"] and run.read_result()["status"] == "ok", folder
    rows = list(run.metrics())
    assert rows and any("hparams" in r for r in rows), folder


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name, launcher", [
    *((n, "debug") for n in LOCAL_METHODS),
    # the warm pool once in the quick suite, every definition through it in the full one
    *(pytest.param(n, "local", marks=[] if n == "digits-mlp" else pytest.mark.slow)
      for n in LOCAL_METHODS),
])  # fmt: skip
def test_every_smoke_variant_runs(tmp_path, data_dirs, name, launcher):
    from experiments.registry import get

    methods = None if launcher == "debug" else LOCAL_METHODS[name]
    overrides = smoke_overrides(name, data_dirs) + ["budget.trials=1"] * (launcher == "local")
    out = run_experiment(get(name), methods, None, tmp_path, launcher=launcher, smoke=True,
                         overrides=overrides, bar=False)  # fmt: skip
    assert {m for m, _ in out} == set(methods or get(name).methods)
    for (method, seed), rec in out.items():
        folder = tmp_path / name / method / f"seed{seed}"
        if "trials" in rec:  # a search: every trial finished, the best one selected
            assert rec["finished"] and rec["best"] is not None, rec
            for t in rec["trials"]:
                check_complete(folder / f"trial{t['trial']}")
        else:
            check_complete(folder)


def dies_after_a_checkpoint(exp, method, seed, run_dir, **kwargs):
    """run_stn whose job dies (node failure, OOM kill) after its checkpoint at step 20."""
    from experiments.objective import run_stn

    run_stn(exp, method, seed, run_dir, stop_after_steps=20, **kwargs)
    raise RuntimeError("node died")


@pytest.mark.usefixtures("one_thread")
def test_a_failed_run_resumes_from_its_checkpoint_on_rerun(tmp_path, capsys):
    from experiments.registry import get

    args = dict(methods=("stn",), seeds=(0,), launcher="debug", smoke=True, bar=False)
    died = run_experiment(get("digits-mlp"), runs_dir=tmp_path / "a", **args,
                          objectives={"stn": dies_after_a_checkpoint})  # fmt: skip
    run = RunDir(tmp_path / "a" / "digits-mlp" / "stn" / "seed0")
    assert died[("stn", 0)]["status"] == "failed" and run.checkpoint_file.exists()
    assert run.read_result()["error"] == "RuntimeError: node died"

    again = run_experiment(get("digits-mlp"), runs_dir=tmp_path / "a", **args)[("stn", 0)]
    assert "stn seed0: resuming a failed run (RuntimeError: node died)" in capsys.readouterr().err
    assert again["status"] == "ok"
    assert json.loads(run.failed_file.read_text())["error"] == "RuntimeError: node died"
    # resumed, not restarted: the same rows and result as a run that never died
    ref = run_experiment(get("digits-mlp"), runs_dir=tmp_path / "b", **args)[("stn", 0)]
    clock = {"wall_s", "elapsed"}
    untimed = lambda r: {k: v for k, v in r.items() if k not in clock} | {"spent": None}  # noqa: E731
    assert untimed(again) == untimed(ref) and again["spent"]["epochs"] == ref["spent"]["epochs"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in clock} for r in rows]  # noqa: E731
    ref_run = RunDir(tmp_path / "b" / "digits-mlp" / "stn" / "seed0")
    assert strip(run.metrics()) == strip(ref_run.metrics())


SMALL = Launch(launcher="slurm", cpus_per_task=1, mem_gb=0.25, timeout_min=5, signal_delay_s=30)


class InterruptSearch(Progress):
    """Progress that stops the sweep (like Ctrl-C) at the first finished trial of a search."""

    def update(self, message: str) -> None:
        super().update(message)
        if "trial" in message:
            raise KeyboardInterrupt


@pytest.mark.slurm
def test_slurm_sweep_is_interrupted_and_resumed_without_duplicate_trials(tmp_path, monkeypatch):
    exp = apply_overrides(toy_exp(), ["seeds=0", "budget.trials=4", "budget.parallel=2"])
    exp = dataclasses.replace(exp, launch=SMALL)
    monkeypatch.setattr("experiments.runner.Progress", InterruptSearch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, ["random"], runs_dir=tmp_path, objectives=OBJECTIVES, bar=False)
    monkeypatch.undo()
    jobs = json.loads((tmp_path / "toy/random/seed0/jobs.json").read_text())
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs.values()}) == 1  # one array
    out = run_experiment(exp, ["stn", "random"], runs_dir=tmp_path, objectives=OBJECTIVES)
    assert out[("stn", 0)]["status"] == "ok" and out[("random", 0)]["finished"]
    for t in range(4):
        trial = tmp_path / "toy/random/seed0" / f"trial{t}"
        assert (trial / "starts.txt").read_text() == "start\n"  # re-attached, not resubmitted
    (row,) = [r for r in status(tmp_path, "toy") if r["method"] == "random"]
    assert row["done"] == 4 and len(row["jobs"]) == 4  # SLURM ids recorded in spec.json


def test_a_local_search_is_extended_by_a_larger_budget(tmp_path):
    exp = dataclasses.replace(toy_exp("local"), methods=("random",), seeds=(0,))
    first = run_experiment(exp, runs_dir=tmp_path, objectives=OBJECTIVES)[("random", 0)]
    more = run_experiment(exp, runs_dir=tmp_path, objectives=OBJECTIVES,
                          overrides=["budget.trials=5"])[("random", 0)]  # fmt: skip
    assert len(first["trials"]) == 3 and len(more["trials"]) == 5 and more["finished"]
    assert more["trials"][:3] == first["trials"][:3]


@pytest.mark.slurm
def test_on_slurm_each_pbt_generation_goes_out_as_one_array(tmp_path):
    exp = apply_overrides(toy_exp(), ["seeds=0", "budget.parallel=2"])
    pbt = {"pbt": {"population": 3, "epochs": 2, "interval": 1}}
    exp = dataclasses.replace(exp, launch=SMALL, searchers=pbt)
    out = run_experiment(exp, ["pbt"], runs_dir=tmp_path, objectives=OBJECTIVES, bar=False)
    search = out[("pbt", 0)]
    assert search["finished"] and len(search["trials"]) == 6
    jobs = json.loads((tmp_path / "toy/pbt/seed0/jobs.json").read_text())
    arrays = [{jobs[str(t)].split("_")[0] for t in gen} for gen in ((0, 1, 2), (3, 4, 5))]
    assert [len(a) for a in arrays] == [1, 1] and arrays[0] != arrays[1], jobs
