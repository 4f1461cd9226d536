"""PBT through the real harness on digits (the driver, submitit's debug executor, run_trial, the
fixed loop): a continued trial starts from the copied member's checkpoint and trains with its
own hyperparameters, a generation goes out in one submission, the search resumes after being
cut mid-generation to the same result, its lineage is recorded and replayed, and a badly
started population improves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from experiments import driver
from experiments.driver import run_search
from experiments.fixed import FixedConfig, train_fixed
from experiments.objective import run_trial
from experiments.spec import Budget, Experiment, Variant, derive_seed
from experiments.store import RunDir, SearchDir, lineage
from experiments.tasks import DigitsTask
from slurm.executors import Launch, make_executor
from stn import checkpoint as ckpt
from stn.loop import STNConfig

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 17  # digits: 1077 training images in batches of 64


def digits_pbt(population=3, epochs=3.0, interval=1.0, hidden=16, task=None, **options):
    task = task or DigitsTask(hidden=hidden, epochs=epochs)
    pbt = {"population": population, "epochs": epochs, "interval": interval, **options}
    budget = Budget(trials=None, epochs=population * epochs, parallel=population)
    replay = {"pbt-schedule": Variant(from_method="pbt", use="schedule")}
    return Experiment("digits-pbt", "tests", task, STNConfig(), ("pbt",), seeds=(0,),
                      budget=budget, launch=Launch(launcher="debug"), searchers={"pbt": pbt},
                      variants=replay)  # fmt: skip


def search(exp, runs: Path, objective=None) -> dict:
    return run_search(exp, "pbt", 0, runs, make_executor(exp.launch, runs / ".submitit"),
                      objective=objective)  # fmt: skip


def comparable(summary: dict) -> dict:
    """A summary without its timings, which differ between two runs of one search."""
    out = json.loads(json.dumps(summary))
    out.pop("spent")
    for t in out["trials"]:
        t.pop("wall_s", None)
        t["spent"] = t["spent"]["epochs"]
    return out


class FirstWeights:
    """run_trial, recording each trial's weights when its first training step starts."""

    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.parents: dict[int, dict[str, torch.Tensor]] = {}  # the parent's saved weights
        self.on_disk: list[int] = []  # checkpoints in the search folder when a trial starts

    def __call__(self, exp, method, seed, params, run_dir, **kwargs):
        trial = int(Path(run_dir).name[len("trial") :])
        if kwargs.get("resume_from") is not None:  # it must still be there
            saved = ckpt.load(RunDir(kwargs["resume_from"]).checkpoint_file, "fixed")
            self.parents[trial] = saved["model"]
        self.on_disk.append(len(list(Path(run_dir).parent.glob("trial*/checkpoint.pt"))))
        task = exp.task
        recorder = self

        class Recording(type(task)):
            def build(self, seed, device="cpu"):
                problem = task.build(seed, device)
                train_loss = problem.train_loss

                def first(model, batch, hb):
                    if trial not in recorder.weights:
                        recorder.weights[trial] = {k: v.clone() for k, v in
                                                   model.state_dict().items()}  # fmt: skip
                    return train_loss(model, batch, hb)

                problem.train_loss = first
                return problem

        exp = type(exp)(**{**exp.__dict__, "task": Recording(**task.__dict__)})
        return run_trial(exp, method, seed, params, run_dir, **kwargs)


def test_a_copy_starts_from_the_copied_members_checkpoint_with_its_own_hparams(tmp_path):
    exp = digits_pbt(population=4, epochs=2.0, interval=1.0, fraction=0.25)
    recorder = FirstWeights()
    summary = search(exp, tmp_path, recorder)
    folder = SearchDir(tmp_path / "digits-pbt" / "pbt" / "seed0")
    rows = {t["trial"]: t for t in summary["trials"]}
    gen0, gen1 = [rows[t] for t in range(4)], [rows[t] for t in range(4, 8)]
    best = min(gen0, key=lambda t: (t["val_loss"], t["trial"]))
    worst = max(gen0, key=lambda t: (t["val_loss"], -t["trial"]))
    copier = gen1[worst["trial"]]
    assert copier["resume_from"] == best["trial"] and copier["params"] != best["params"]
    for t in gen1:  # every continued trial starts from exactly its parent's saved weights
        saved, start = recorder.parents[t["trial"]], recorder.weights[t["trial"]]
        assert all(torch.equal(start[k], saved[k]) for k in saved), t["trial"]
        used = {tuple(sorted(r["hparams"].items())) for r in RunDir(folder.trial(t["trial"]).path)
                .metrics()}  # fmt: skip
        assert used == {tuple(sorted(t["params"].items()))}  # trained with its own values
        assert t["spent"]["epochs"] == 1.0 and t["epochs"] == 2.0 and t["steps"] == 2 * STEPS
    # two members started from the same checkpoint differ only through their hyperparameters
    assert gen1[best["trial"]]["resume_from"] == best["trial"]
    # the record: the copier's lineage is the best member's first interval, then its own
    assert summary["lineages"][str(copier["trial"])] == [
        {"trial": best["trial"], "params": best["params"], "from_epoch": 0.0, "to_epoch": 1.0,
         "from_step": 0, "to_step": STEPS},
        {"trial": copier["trial"], "params": copier["params"], "from_epoch": 1.0,
         "to_epoch": 2.0, "from_step": STEPS, "to_step": 2 * STEPS},
    ]  # fmt: skip
    assert summary["best"]["lineage"] == lineage(summary["trials"], summary["best"]["trial"])
    assert SearchDir(folder.path).read_summary()["lineages"] == summary["lineages"]


def test_only_the_checkpoints_a_later_generation_continues_are_kept(tmp_path):
    """A trial's parent checkpoint is there when it starts; the ones no later trial continues
    are deleted as generations finish (at most one generation's on disk), none at the end."""
    exp = digits_pbt(population=3, epochs=4.0, interval=1.0)
    recorder = FirstWeights()
    summary = search(exp, tmp_path, recorder)
    continued = [t["trial"] for t in summary["trials"] if t["resume_from"] is not None]
    assert sorted(recorder.parents) == continued == list(range(3, 12))
    # a generation starts with exactly the previous one's; never more than it and its parents
    assert [recorder.on_disk[t] for t in (3, 6, 9)] == [3, 3, 3] and max(recorder.on_disk) <= 6
    assert not list(tmp_path.glob("**/checkpoint.pt"))


def test_a_continuation_keeps_the_optimisers_learning_rate_and_scores_its_own_evaluations(
    toy_problem, tmp_path
):
    cfg = FixedConfig(epochs=2, lr=0.1, momentum=0.9)
    parent = train_fixed(toy_problem(), {"dropout": 0.0, "noise": 0.0}, cfg,
                         checkpoint_path=tmp_path / "parent.pt")  # fmt: skip
    state = ckpt.load(tmp_path / "parent.pt", "fixed")
    state["optimizers"]["weights"]["param_groups"][0]["lr"] = 0.0125  # as a plateau decayed it
    state["counters"]["best"]["val_loss"] = best = parent.val_loss / 100  # better than any
    ckpt.save_atomic(state, tmp_path / "decayed.pt")
    for own_best in (False, True):
        rows: list = []
        child = train_fixed(toy_problem(), {"dropout": 0.8, "noise": 0.5},
                            FixedConfig(epochs=3, lr=0.1, momentum=0.9), log=rows.append,
                            checkpoint_path=tmp_path / f"child{own_best}.pt",
                            resume_from=tmp_path / "decayed.pt", own_best=own_best)  # fmt: skip
        (ev,) = [r for r in rows if r["kind"] == "eval"]
        assert ev["lr"] == 0.0125 and ev["hparams"] == {"dropout": 0.8, "noise": 0.5}
        assert child.hparams == {"dropout": 0.8, "noise": 0.5}
        # own_best: its result is its own evaluation; else also its parent's best
        assert child.val_loss == (ev["val_loss"] if own_best else best)


def test_a_generation_goes_out_in_one_submission(tmp_path, monkeypatch):
    sizes = []
    real = driver.submit

    def counting(executor, calls, *args):
        sizes.append(len(calls))
        return real(executor, calls, *args)

    monkeypatch.setattr(driver, "submit", counting)
    summary = search(digits_pbt(population=3, epochs=2.0, interval=1.0), tmp_path)
    assert sizes == [3, 3] and summary["stop_reason"] == "budget spent"
    assert summary["spent"]["epochs"] == 6.0 and len(summary["trials"]) == 6


class Cut:
    """run_trial; its `at`-th call trains half an interval, saves its checkpoint and raises
    KeyboardInterrupt (a driver killed while a trial trains)."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self, exp, method, seed, params, run_dir, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            stop = round((kwargs["epochs"] - 0.5) * STEPS)
            rec = run_trial(exp, method, seed, params, run_dir, stop_after_steps=stop, **kwargs)
            assert rec["status"] == "interrupted"
            raise KeyboardInterrupt
        return run_trial(exp, method, seed, params, run_dir, **kwargs)


def test_a_search_cut_mid_generation_resumes_to_the_same_result(tmp_path):
    exp = digits_pbt(population=3, epochs=3.0, interval=1.0)
    straight = search(exp, tmp_path / "a")
    cut = Cut(at=5)  # generation 1: one member told, one cut while training, one not started
    with pytest.raises(KeyboardInterrupt):
        search(exp, tmp_path / "b", cut)
    folder = SearchDir(tmp_path / "b" / "digits-pbt" / "pbt" / "seed0")
    events = folder.read_journal()
    assert [e["id"] for e in events if e["event"] == "tell"] == [0, 1, 2, 3]
    resumed = search(exp, tmp_path / "b", cut)
    assert comparable(resumed) == comparable(straight)  # the same losses, bit for bit
    events = [json.loads(line) for line in folder.journal_file.read_text().splitlines()]
    for kind in ("ask", "tell"):  # each trial asked once and told once
        ids = [e["id"] for e in events if e["event"] == kind]
        assert sorted(ids) == list(range(9)), kind
    assert cut.calls == 9 + 1  # each trial trained once; the cut one continued, not restarted
    assert resumed["spent"]["epochs"] == 9.0 and resumed["stop_reason"] == "budget spent"


def test_the_selected_lineage_is_replayed_by_a_schedule_variant(tmp_path):
    exp = digits_pbt(population=3, epochs=3.0, interval=1.0, fraction=0.34)
    run_dir = tmp_path / "digits-pbt" / "pbt-schedule" / "seed0"
    with pytest.raises(KeyboardInterrupt):
        search(exp, tmp_path, Cut(at=2))
    with pytest.raises(ValueError, match=r"finished 'pbt' search .*\(run method pbt first\)"):
        run_trial(exp, "pbt-schedule", 0, None, run_dir, variant=exp.variants["pbt-schedule"])
    summary = search(exp, tmp_path)
    plan = summary["best"]["lineage"]
    rec = run_trial(exp, "pbt-schedule", derive_seed(0, "pbt-schedule"), None, run_dir,
                    variant=exp.variants["pbt-schedule"], epochs=plan[-1]["to_epoch"])  # fmt: skip
    assert rec["status"] == "ok"
    used = {r["step"]: r["hparams"] for r in RunDir(run_dir).metrics() if r["kind"] == "train"}
    for seg in plan:  # step s (1-based) trained at the values of the segment it falls in
        for step in range(seg["from_step"] + 1, seg["to_step"] + 1):
            assert used[step] == pytest.approx(seg["params"]), step


def test_a_badly_started_population_improves_over_its_first_generation(tmp_path):
    # every member starts at (or one perturbation from) heavy regularisation
    bad = {"input_dropout": 0.45, "dropout1": 0.75, "dropout2": 0.75, "input_noise": 0.45}
    task = DigitsTask(hidden=32, epochs=8, init=bad)
    exp = digits_pbt(population=6, epochs=8.0, interval=1.0, task=task, start="init")
    summary = search(exp, tmp_path)
    trials = summary["trials"]
    first, last = trials[:6], trials[-6:]
    assert all(t["status"] == "ok" for t in trials)
    # trained as long as the last generation, at the starting values: barely learns
    control = run_trial(exp, "fixed", 0, task.space().init(), tmp_path / "control")
    assert summary["best"]["val_loss"] < 0.8 * control["val_loss"]
    assert min(t["val_loss"] for t in last) < 0.8 * min(t["val_loss"] for t in first)
    # because the population moved away from the bad values
    mean = {k: sum(t["params"][k] for t in last) / len(last) for k in bad}
    assert sum(mean.values()) < 0.9 * sum(bad.values()), mean
    assert math.isfinite(summary["best"]["test_loss"])
