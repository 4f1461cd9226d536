"""The search driver on a toy objective through submitit's debug executor (the real submission
path, in-process): resume by journal replay, failed trials, budgets, search.json."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import pytest

from experiments.driver import Search, run_search
from experiments.spec import Budget, Experiment, SpecError, apply_overrides
from experiments.store import RunDir, SearchDir
from slurm.executors import Launch, make_executor
from stn.space import HParam, Space


@dataclass(frozen=True)
class ToyTask:
    epochs: float = 2.0

    def space(self) -> Space:
        return Space.of(HParam("x", -2.0, 2.0, 0.5), HParam("n", 1, 4, 2, integer=True))


@dataclass(frozen=True)
class NoSTN:
    pass


class Toy:
    """A fake `objective.run_trial`: a quadratic in x; x > 1.5 raises, x < -1.5 diverges;
    `interrupt_at` raises KeyboardInterrupt on that call (an interrupted sweep)."""

    def __init__(self, interrupt_at: int | None = None, sleep: float = 0.0):
        self.calls, self.interrupt_at, self.sleep = 0, interrupt_at, sleep

    def __call__(self, exp, method, seed, params, run_dir, *, epochs=None, resume_from=None,
                 keep_checkpoint=False, own_best=False, wandb="off", device="cpu"):  # fmt: skip
        run = RunDir(run_dir)
        self.calls += 1  # counted first: a finished trial must not be submitted again
        if run.done:
            return run.read_result()
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        run.write_spec({"method": method, "seed": seed, "params": params})
        time.sleep(self.sleep)
        if params["x"] > 1.5:
            raise RuntimeError("x is too large")
        val = math.nan if params["x"] < -1.5 else (params["x"] - 0.3) ** 2 + 0.1 * params["n"]
        status = "ok" if math.isfinite(val) else "diverged"
        rec = {"status": status, "reason": None if status == "ok" else "non-finite loss",
               "val_loss": val, "test_loss": val + 0.01, "val_metric": None,
               "test_metric": None, "metric_name": "accuracy", "wall_s": 0.01, "hparams": params,
               "epochs": epochs if epochs is not None else exp.task.epochs}  # fmt: skip
        run.log({"step": 1, "val_loss": val, "hparams": params})
        run.write_result(rec)
        return rec


def toy_exp(*overrides: str, **searchers) -> Experiment:
    exp = Experiment("toy", "nothing", ToyTask(), NoSTN(), ("random",), seeds=(0,),
                     budget=Budget(trials=6, parallel=2), launch=Launch(launcher="debug"),
                     searchers={"hyperband": {"R": 9, "eta": 3}, **searchers})  # fmt: skip
    return apply_overrides(exp, list(overrides))


def search(exp, method, runs, objective):
    executor = make_executor(exp.launch, runs / ".submitit")
    return run_search(exp, method, 0, runs, executor, objective=objective)


def comparable(summary: dict) -> dict:
    """A summary without its timings (which differ between two runs of the same search)."""
    out = json.loads(json.dumps(summary))
    out.pop("spent")
    for t in out["trials"]:
        t.pop("wall_s", None)
        if "spent" in t:
            t["spent"] = t["spent"]["epochs"]
    return out


@pytest.mark.parametrize("method, k", [("random", 3), ("hyperband", 4), ("bo", 4)])
def test_interrupted_search_resumes_to_the_same_result(tmp_path, method, k):
    exp = toy_exp(bo={"n_initial": 3, "candidates": 64, "refine": 1, "restarts": 1})
    straight = search(exp, method, tmp_path / "a", Toy())

    toy = Toy(interrupt_at=k + 1)
    with pytest.raises(KeyboardInterrupt):
        search(exp, method, tmp_path / "b", toy)
    folder = SearchDir(tmp_path / "b" / "toy" / method / "seed0")
    tells = [e for e in map(json.loads, folder.journal_file.read_text().splitlines())
             if e["event"] == "tell"]  # fmt: skip
    assert len(tells) == k
    with open(folder.journal_file, "a") as f:  # and the crash cut a line in the middle
        f.write('{"event": "tell", "id": ')
    resumed = search(exp, method, tmp_path / "b", toy)

    assert comparable(resumed) == comparable(straight)
    assert resumed["finished"] and resumed["best"] is not None
    on_disk = json.loads(folder.summary_file.read_text())
    assert comparable(on_disk) == comparable(json.loads(json.dumps(resumed)))
    events = [json.loads(line) for line in folder.journal_file.read_text().splitlines()]
    asked = [e["id"] for e in events if e["event"] == "ask"]
    assert len(asked) == len(set(asked)) == len(resumed["trials"])  # no trial asked twice
    # each trial trained once, plus the one call the interruption cut short
    assert toy.calls == len(resumed["trials"]) + 1


def test_failed_and_diverged_trials_are_recorded_and_the_search_goes_on(tmp_path):
    exp = toy_exp(grid={"params": ["x"], "points": 5})  # x = -2 (diverges), -1, 0, 1, 2 (raises)
    summary = search(exp, "grid", tmp_path, Toy())
    status = {t["params"]["x"]: t["status"] for t in summary["trials"]}
    assert status == {-2.0: "diverged", -1.0: "ok", 0.0: "ok", 1.0: "ok", 2.0: "failed"}
    assert summary["best"]["params"]["x"] == 0.0 and summary["finished"]
    assert summary["stop_reason"] == "plan complete"
    reasons = {t["params"]["x"]: t.get("reason") for t in summary["trials"]}
    assert reasons[2.0] == "RuntimeError: x is too large" and reasons[-2.0] == "non-finite loss"
    trial_dirs = {t["params"]["x"]: tmp_path / "toy/grid/seed0" / f"trial{t['trial']}"
                  for t in summary["trials"]}  # fmt: skip
    raised = RunDir(trial_dirs[2.0]).read_result()
    assert raised["status"] == "failed" and raised["reason"] == "RuntimeError: x is too large"


class AlwaysFails(Toy):
    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise RuntimeError("no data")


def test_a_search_whose_trials_all_fail_ends(tmp_path):
    # an epoch budget: failed trials train no epoch, so only budget.failures ends it
    exp = toy_exp("budget.trials=none", "budget.epochs=5", "budget.failures=4")
    summary = search(exp, "random", tmp_path, AlwaysFails())
    assert (
        summary["finished"]
        and summary["stop_reason"] == "4 failed trials in a row (budget.failures)"
    )
    assert 4 <= len(summary["trials"]) <= 4 + 1  # the trials in flight when it ended are told
    assert {t["reason"] for t in summary["trials"]} == {"RuntimeError: no data"}


def test_budget_in_trials_epochs_and_seconds(tmp_path):
    by_trials = search(toy_exp("budget.trials=3"), "random", tmp_path / "t", Toy())
    assert len(by_trials["trials"]) == 3 and by_trials["spent"]["trials"] == 3

    # 2 epochs a trial, at most 5 in all: asks stop once told + in-flight epochs reach 5
    exp = toy_exp("budget.trials=none", "budget.epochs=5", "budget.parallel=1")
    by_epochs = search(exp, "random", tmp_path / "e", Toy())
    assert len(by_epochs["trials"]) == 3 and by_epochs["spent"]["epochs"] == 6.0

    exp = toy_exp("budget.trials=none", "budget.seconds=0.5", "budget.parallel=1")
    by_time = search(exp, "random", tmp_path / "s", Toy(sleep=0.2))
    assert 2 <= len(by_time["trials"]) <= 4 and by_time["spent"]["seconds"] >= 0.5


def test_finished_search_is_reused_and_can_be_extended(tmp_path):
    exp = toy_exp("budget.trials=2")
    toy = Toy()
    first = search(exp, "random", tmp_path, toy)
    again = search(exp, "random", tmp_path, toy)
    assert toy.calls == 2 and comparable(again) == comparable(first)
    more = search(toy_exp("budget.trials=4"), "random", tmp_path, toy)
    assert toy.calls == 4 and len(more["trials"]) == 4
    assert more["trials"][:2] == again["trials"][:2]


def test_endless_search_is_refused(tmp_path):
    from experiments.driver import check_searcher

    with pytest.raises(SpecError, match="no end"):
        check_searcher(toy_exp("budget.trials=none"), "random")
    with pytest.raises(SpecError, match="searchers.hyperband"):
        check_searcher(toy_exp(hyperband={"eta": 1}), "hyperband")


def test_a_search_given_no_room_waits_instead_of_ending(tmp_path):
    # local jobs share a cap: a search may get no slot in a round, which must not end it
    exp = toy_exp()
    s = Search(exp, "random", 0, tmp_path, objective=Toy(), launcher="debug")
    executor = make_executor(exp.launch, tmp_path / ".submitit")
    assert s.fill(executor, 0) == 0 and not s.inflight and not s.finished
    assert s.fill(executor, 1) == 1 and not s.finished


def test_a_journal_with_repeated_tells_is_continued(tmp_path, capsys):
    # two drivers of one search (before searches were locked) told the same trials twice
    exp = toy_exp("budget.trials=4")
    straight = search(exp, "random", tmp_path / "a", Toy())
    toy = Toy(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        search(exp, "random", tmp_path / "b", toy)
    folder = SearchDir(tmp_path / "b" / "toy" / "random" / "seed0")
    lines = folder.journal_file.read_text().splitlines(keepends=True)
    folder.journal_file.write_text("".join(lines + [line for line in lines if '"tell"' in line]))
    resumed = search(exp, "random", tmp_path / "b", toy)
    assert comparable(resumed) == comparable(straight) and resumed["finished"]
    assert "repeated tell of trial 0, skipped" in capsys.readouterr().err


def test_checkpoints_are_kept_for_searchers_that_resume_from_a_parent(tmp_path):
    from baselines import SEARCHERS

    assert [m for m, c in SEARCHERS.items() if c.resumes_from_parent] == ["hyperband", "pbt"]
    assert {m for m, c in SEARCHERS.items() if c.independent_trials} >= {"fixed", "grid", "random"}
    calls = []

    class Recording(Toy):
        def __call__(self, *args, keep_checkpoint=False, **kwargs):
            calls.append(keep_checkpoint)
            return super().__call__(*args, **kwargs)

    for method in ("random", "hyperband"):
        calls.clear()
        search(toy_exp("budget.trials=2"), method, tmp_path / method, Recording())
        assert set(calls) == {method == "hyperband"}, method


def test_a_lost_trial_result_is_rebuilt_from_the_journal(tmp_path):
    exp = toy_exp("budget.trials=3")
    first = search(exp, "random", tmp_path, Toy())
    folder = SearchDir(tmp_path / "toy" / "random" / "seed0")
    folder.trial(1).result_file.write_bytes(b"\x00 lost")
    folder.summary_file.unlink()
    toy = Toy()
    again = search(exp, "random", tmp_path, toy)
    assert toy.calls == 0  # nothing trained again
    assert comparable(again) == comparable(first)  # test losses included, from the journal
    assert (folder.path / "trial1" / "result.json.corrupt").exists()
