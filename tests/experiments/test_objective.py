"""The objective: complete run folders, reuse, resume, STN runs, variants, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from analysis.tables import paper_numbers
from experiments.data import DataError
from experiments.data.synthetic import write_ptb
from experiments.definitions import ALL
from experiments.driver import run_search
from experiments.objective import run_stn, run_trial, stn_config
from experiments.spec import Experiment, Variant, smoke
from experiments.store import RESULT_KEYS, RunDir
from experiments.tasks import Cifar10Task, DigitsTask
from slurm.executors import Launch, make_executor
from stn.loop import STNConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def digits_exp(**kw) -> Experiment:
    task = DigitsTask(hidden=8, epochs=2)
    stn = STNConfig(hyper_lr=1e-2)
    return Experiment(name="digits-test", reproduces="tests", task=task, stn=stn,
                      methods=("stn",), **kw)  # fmt: skip


def rows_of(path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in RunDir(path).metrics()]


def test_trial_writes_a_complete_run_folder_and_reuses_it(tmp_path, capsys):
    run_dir = tmp_path / "digits-test" / "random" / "seed0" / "trial3"
    params = {**DigitsTask().space().init(), "dropout1": 0.3}
    rec = run_trial(digits_exp(), "random", 7, params, run_dir)
    assert set(RESULT_KEYS) <= set(rec) and rec["status"] == "ok"
    assert rec["hparams"]["dropout1"] == 0.3 and rec["epochs"] == 2.0
    spec = RunDir(run_dir).read_spec()
    assert spec["git"]["commit"] and spec["experiment"]["task"]["hidden"] == 8
    assert (spec["method"], spec["seed"], spec["experiment_seed"], spec["trial"]) == (
        "random", 7, 0, 3,
    )  # fmt: skip
    rows = rows_of(run_dir)
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert all(r["val_loss"] > 0 and r["hparams"]["dropout1"] == 0.3 for r in rows)
    assert not RunDir(run_dir).checkpoint_file.exists()  # kept only when asked (Hyperband)
    lines = [x for x in capsys.readouterr().err.splitlines() if "digits-test/random" in x]
    assert len(lines) == 2 and "val_loss" in lines[0]  # one line per epoch off a terminal
    mtime = RunDir(run_dir).result_file.stat().st_mtime_ns
    assert run_trial(digits_exp(), "random", 7, params, run_dir) == rec
    assert RunDir(run_dir).result_file.stat().st_mtime_ns == mtime and rows_of(run_dir) == rows


def test_interrupted_trial_resumes_to_the_same_result(tmp_path):
    exp = digits_exp()
    full = run_trial(exp, "hyperband", 1, None, tmp_path / "a", epochs=3, keep_checkpoint=True)
    cut = run_trial(exp, "hyperband", 1, None, tmp_path / "b", epochs=3, stop_after_steps=20)
    assert cut["status"] == "interrupted" and not RunDir(tmp_path / "b").done
    done = run_trial(exp, "hyperband", 1, None, tmp_path / "b", epochs=3)
    assert done["val_loss"] == full["val_loss"] and rows_of(tmp_path / "b") == rows_of(
        tmp_path / "a"
    )
    # Hyperband promotion: continue trial a (3 epochs) to 4 epochs
    promoted = run_trial(exp, "hyperband", 1, None, tmp_path / "c", epochs=4,
                         resume_from=tmp_path / "a")  # fmt: skip
    assert promoted["epochs"] == 4.0 and [r["epoch"] for r in rows_of(tmp_path / "c")] == [4.0]
    assert promoted["spent"]["epochs"] == 1.0  # its own epoch, not its parent's three


def test_stn_run_folder_resume_and_variants(tmp_path):
    exp = digits_exp(variants={"sched": Variant(from_method="stn", use="schedule"),
                               "per-epoch": Variant(from_method="stn", use="schedule",
                                                    every="epoch"),
                               "final": Variant(from_method="stn", use="final")})  # fmt: skip
    full = run_stn(exp, "stn", 5, tmp_path / "x" / "stn" / "seed0")
    cut_dir = tmp_path / "stn" / "seed0"
    cut = run_stn(exp, "stn", 5, cut_dir, stop_after_steps=20)
    assert cut["status"] == "interrupted" and not RunDir(cut_dir).done
    rec = run_stn(exp, "stn", 5, cut_dir)
    assert set(RESULT_KEYS) <= set(rec) and rec["val_loss"] == full["val_loss"]
    rows = rows_of(cut_dir)
    assert rows == rows_of(tmp_path / "x" / "stn" / "seed0")
    hyper = [r for r in rows if r["kind"] == "hyper"]
    assert hyper and set(hyper[0]["hparams"]) == set(exp.task.space().names)
    assert set(hyper[0]["sigmas"]) == set(hyper[0]["hparams"])
    assert RunDir(cut_dir).read_spec()["stn_config"]["seed"] == 5

    sched = run_trial(exp, "sched", 5, None, tmp_path / "sched" / "seed0",
                      variant=exp.variants["sched"])  # fmt: skip
    assert sched["status"] == "ok"
    used = {r["step"]: r["hparams"] for r in rows_of(tmp_path / "sched" / "seed0")
            if r["kind"] == "train"}  # fmt: skip
    for h in hyper:  # the step after a hyper step trains at its values
        if h["step"] + 1 in used:
            assert used[h["step"] + 1] == pytest.approx(h["hparams"])
    # per epoch (the authors' retraining): epoch e at the values the STN logged at its end
    run_trial(exp, "per-epoch", 5, None, tmp_path / "per-epoch" / "seed0",
              variant=exp.variants["per-epoch"])  # fmt: skip
    used = {r["step"]: r["hparams"] for r in rows_of(tmp_path / "per-epoch" / "seed0")
            if r["kind"] == "train"}  # fmt: skip
    evals = [r for r in rows if r["kind"] == "eval"]
    spe = evals[0]["step"] / evals[0]["epoch"]
    for e in evals:  # every step of epoch e trains at the values of e's evaluation
        first, last = round(e["step"] - spe) + 1, e["step"]
        assert used[first] == used[last] == pytest.approx(e["hparams"]), e["epoch"]
    final = run_trial(exp, "final", 5, None, tmp_path / "final" / "seed0",
                      variant=exp.variants["final"])  # fmt: skip
    assert final["hparams"] == pytest.approx(rec["final_hparams"])
    with pytest.raises(ValueError, match="run method stn first"):
        run_trial(exp, "final", 5, None, tmp_path / "final" / "seed1",
                  variant=exp.variants["final"])  # fmt: skip


def test_stn_methods_inits_and_settings(tmp_path):
    exp = digits_exp(stn_inits={"stn-init50": {"dropout1": 0.5}},
                     searchers={"delta-stn": {"train_steps": 3}})  # fmt: skip
    cfg = stn_config(exp, "delta-stn", 1, "cpu", steps_per_epoch=17)
    assert (cfg.delta, cfg.train_steps, cfg.lr, cfg.epochs) == (True, 3, exp.task.lr, 2)
    frac = dataclasses.replace(exp, task=dataclasses.replace(exp.task, epochs=1.5))
    assert stn_config(frac, "stn", 1, "cpu", steps_per_epoch=10).max_steps == 15
    with pytest.raises(ValueError, match="stn.lr -> task.lr"):
        stn_config(dataclasses.replace(exp, stn=STNConfig(lr=0.5)), "stn", 1, "cpu", 17)
    with pytest.raises(ValueError, match="valid: stn, delta-stn, stn-init50"):
        run_stn(exp, "stn-init20", 1, tmp_path / "bad")
    run_stn(exp, "stn-init50", 1, tmp_path / "init", stop_after_steps=1)
    assert RunDir(tmp_path / "init").read_spec()["init"]["dropout1"] == 0.5


def test_missing_dataset_fails_before_writing(tmp_path):
    exp = dataclasses.replace(digits_exp(), task=Cifar10Task(data_dir=str(tmp_path / "none")))
    with pytest.raises(DataError) as err:
        run_trial(exp, "random", 0, None, tmp_path / "run")
    assert "\n" not in str(err.value) and "python -m experiments download cifar10" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_every_definition_and_the_table_1_pipeline_smoke(tmp_path):
    names = [e.name for e in ALL]
    assert names == ["digits-mlp", "cifar10-alexnet", "ptb-lstm", "ptb-output-dropout",
                     "ptb-schedule-init"]  # fmt: skip
    for exp in ALL:
        small = smoke(exp)
        space = exp.task.space()
        assert paper_numbers(exp.name)["source"] and small.task.epochs <= 2
        for v in exp.variants.values():
            assert set(v.values or {}) | set(v.noise_std or {}) <= set(space.names)
        assert all(set(i) <= set(space.names) for i in exp.stn_inits.values())
    exp = {e.name: e for e in ALL}["ptb-output-dropout"]
    data = write_ptb(tmp_path / "ptb", n_lines=60, vocab=40)
    small = smoke(exp)
    small = dataclasses.replace(small, task=dataclasses.replace(small.task, data_dir=str(data)))
    runs = tmp_path / "runs" / exp.name
    assert run_stn(small, "stn", 0, runs / "stn" / "seed0")["status"] == "ok"
    executor = make_executor(Launch(launcher="debug"), tmp_path / ".submitit")
    assert run_search(small, "pbt", 0, tmp_path / "runs", executor)["best"]  # for pbt-schedule
    for name in [m for m in small.methods if m in small.variants]:
        rec = run_trial(small, name, 0, None, runs / name / "seed0", variant=small.variants[name])
        assert rec["status"] == "ok" and rec["metric_name"] == "perplexity", name
    spec = json.loads((runs / "stn" / "seed0" / "spec.json").read_text())
    assert spec["data"]["vocab"] == 40 and spec["data"]["oov"]["test"] == {"tokens": 0, "types": 0}
