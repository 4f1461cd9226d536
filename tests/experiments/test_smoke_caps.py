"""`epoch_steps` and `eval_batches`: what keeps a `--smoke` run small on full-size data.

Counted, never timed: the training steps of an epoch and the batches (PTB: windows) of each
evaluation, in smoke runs on real-format files larger than the caps; the defaults (None) are the
whole split as before; a capped PTB epoch goes on where the last one stopped and a cut run
resumes onto the same batches; bad values are one-line errors.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from experiments.data import bptt_batches
from experiments.data.synthetic import write_cifar10, write_ptb
from experiments.fixed import FixedConfig, train_fixed
from experiments.registry import get
from experiments.runner import run_experiment
from experiments.spec import smoke
from experiments.tasks import Cifar10Task, DigitsTask, PTBTask
from experiments.tasks.common import ClassificationProblem, TaskError
from experiments.tasks.ptb import PTBProblem
from stn.hyper import HyperBatch
from stn.loop import STNConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real-format files larger than the smoke caps: a PTB corpus of ~45k training tokens
    (~1100 smoke windows, ~220 validation and ~450 test windows) and 1000 + 200 CIFAR images;
    and a tiny corpus (~23 smoke windows) for runs that go around it."""
    root = tmp_path_factory.mktemp("data")
    return {
        "ptb": write_ptb(root / "ptb", n_lines=3000, vocab=500, seed=1),
        "cifar10": write_cifar10(root / "cifar", n_train=1000, n_test=200, seed=1),
        "tiny": write_ptb(root / "tiny", n_lines=60, vocab=40),
    }


@contextmanager
def counting():
    """Counts of training steps (train_loss calls) and of each evaluation's batches (its
    cross-entropy calls: one per batch, or per window of PTB) of every task's problems."""
    counts: dict[str, list[int]] = {"steps": [0], "evaluations": []}
    real_eval = {cls: cls.evaluate for cls in (ClassificationProblem, PTBProblem)}
    real_train = {cls: cls.train_loss for cls in (ClassificationProblem, PTBProblem)}
    real_ce = F.cross_entropy

    def train_loss(cls):
        def run(self, *args):
            counts["steps"][0] += 1
            return real_train[cls](self, *args)

        return run

    def evaluate(cls):
        def run(self, *args):
            batches = [0]

            def ce(*a, **k):
                batches[0] += 1
                return real_ce(*a, **k)

            with mock.patch.object(F, "cross_entropy", ce):
                out = real_eval[cls](self, *args)
            counts["evaluations"].append(batches[0])
            return out

        return run

    with (
        mock.patch.object(ClassificationProblem, "train_loss", train_loss(ClassificationProblem)),
        mock.patch.object(PTBProblem, "train_loss", train_loss(PTBProblem)),
        mock.patch.object(ClassificationProblem, "evaluate", evaluate(ClassificationProblem)),
        mock.patch.object(PTBProblem, "evaluate", evaluate(PTBProblem)),
    ):
        yield counts


def smoke_runs(name: str, data_dir, tmp_path, *sets: str) -> tuple[dict, dict]:
    """An STN run and a one-trial random search of `name`'s smoke variant, in-process; the
    results and the counts."""
    overrides = [f"task.data_dir={data_dir}", "budget.trials=1", *sets]
    with counting() as counts:
        out = run_experiment(get(name), ["stn", "random"], None, tmp_path, launcher="debug",
                             smoke=True, overrides=overrides, bar=False)  # fmt: skip
    return out, counts


def check_capped(out: dict, counts: dict, task, full_steps: int) -> None:
    steps, cap = task.epoch_steps, task.eval_batches
    assert full_steps > steps  # the caps bind on these files
    records = [out[("stn", 0)], *out[("random", 0)]["trials"]]
    assert [r["steps"] for r in records] == [steps * task.epochs] * 2
    assert counts["steps"] == [2 * steps * task.epochs]  # nothing else trained
    # every evaluation (val and test, at least once per run) read exactly `eval_batches`
    # batches: both splits are longer than that
    assert len(counts["evaluations"]) >= 4 and set(counts["evaluations"]) == {cap}


def test_ptb_smoke_trains_and_evaluates_at_most_the_caps(data, tmp_path):
    exp = smoke(get("ptb-lstm"))
    task = dataclasses.replace(exp.task, data_dir=str(data["ptb"]))
    problem = task.build(seed=0)
    full = len(bptt_batches(problem.streams["train"], task.bptt))
    assert len(bptt_batches(problem.streams["val"], task.bptt)) > task.eval_batches
    assert len(bptt_batches(problem.streams["test"], task.bptt)) > task.eval_batches
    out, counts = smoke_runs("ptb-lstm", data["ptb"], tmp_path)
    check_capped(out, counts, task, full)


def test_cifar10_smoke_trains_and_evaluates_at_most_the_caps(data, tmp_path):
    # an evaluation batch of 50: 4 make the 200 validation (and test) images, the smoke reads 1
    exp = smoke(get("cifar10-alexnet"))
    task = dataclasses.replace(exp.task, data_dir=str(data["cifar10"]), eval_batch=50)
    problem = task.build(seed=0)
    full = -(-len(problem.splits["train"][1]) // task.batch)
    out, counts = smoke_runs("cifar10-alexnet", data["cifar10"], tmp_path, "task.eval_batch=50")
    check_capped(out, counts, task, full)


def test_every_data_experiments_smoke_caps_steps_and_evaluations():
    """On the real corpora a smoke run without caps trains for minutes (PTB: 23k windows)."""
    for name in ("cifar10-alexnet", "ptb-lstm", "ptb-output-dropout", "ptb-schedule-init"):
        task = smoke(get(name)).task
        assert task.epoch_steps is not None and task.eval_batches is not None, name
        assert get(name).task.epoch_steps is None and get(name).task.eval_batches is None


# --- the defaults: the whole split, as before -----------------------------------------------


def test_the_defaults_are_the_whole_split(data):
    ptb = PTBTask(data_dir=str(data["ptb"]), emb=8, hidden=8, batch=4, bptt=10, eval_batch=2)
    assert ptb.epoch_steps is None and ptb.eval_batches is None
    problem = ptb.build(seed=0)
    windows = bptt_batches(problem.streams["train"], ptb.bptt)
    assert problem.steps_per_epoch() == len(windows)
    for epoch in (0, 1):  # every epoch: all windows, in order, from the first
        got = list(problem.train_batches(epoch))
        assert [i for _, _, i in got] == list(range(len(windows)))
        assert all(torch.equal(x, w[0]) and torch.equal(y, w[1]) for (x, y, _), w in
                   zip(got, windows))  # fmt: skip

    cifar = Cifar10Task(data_dir=str(data["cifar10"]), width=1 / 16, batch=32)
    digits = DigitsTask(hidden=8)
    for task in (cifar, digits):
        assert task.epoch_steps is None and task.eval_batches is None
        problem = task.build(seed=0)
        n = len(problem.splits["train"][1])
        assert problem.steps_per_epoch() == math.ceil(n / task.batch)
        seen = torch.cat([y for _, y in problem.train_batches(0)])
        assert sorted(seen.tolist()) == sorted(problem.splits["train"][1].tolist())


def test_a_cap_above_the_split_changes_nothing(data):
    """epoch_steps / eval_batches at least the split's size: the very batches and numbers of
    the default."""
    sizes = dict(data_dir=str(data["tiny"]), emb=8, hidden=8, batch=4, bptt=10, eval_batch=2)
    plain = PTBTask(**sizes).build(seed=0)
    big = PTBTask(**sizes, epoch_steps=10**6, eval_batches=10**6).build(seed=0)
    assert big.steps_per_epoch() == plain.steps_per_epoch()
    for a, b in zip(plain.train_batches(3), big.train_batches(3), strict=True):
        assert torch.equal(a[0], b[0]) and a[2] == b[2]
    torch.manual_seed(0)
    model = plain.build_model(0)
    fn = lambda b: HyperBatch.fixed(plain.space, plain.space.init(), b)  # noqa: E731
    for split in ("val", "test"):
        assert plain.evaluate(model, fn, split) == big.evaluate(model, fn, split)


# --- what a cap does -----------------------------------------------------------------------


def test_capped_ptb_epochs_go_on_around_the_corpus(data):
    task = PTBTask(data_dir=str(data["tiny"]), emb=8, hidden=8, batch=4, bptt=10,
                   eval_batch=2, epoch_steps=8)  # fmt: skip
    problem = task.build(seed=0)
    windows = bptt_batches(problem.streams["train"], task.bptt)
    n = len(windows)
    assert problem.steps_per_epoch() == 8 and 8 < n < 4 * 8
    seen = [i for e in range(4) for _, _, i in problem.train_batches(e)]
    assert seen == [k % n for k in range(4 * 8)]  # epoch e: windows 8e.. (around the end)
    for x, y, i in problem.train_batches(3):
        assert torch.equal(x, windows[i][0]) and torch.equal(y, windows[i][1])


def test_capped_evaluation_is_the_evaluation_of_the_splits_start(data):
    """PTB: the first k windows with the state carried through them, i.e. the whole evaluation
    of a stream cut after them; classification: the first k batches' examples."""
    sizes = dict(data_dir=str(data["ptb"]), emb=8, hidden=8, batch=4, bptt=10, eval_batch=2)
    capped = PTBTask(**sizes, eval_batches=3).build(seed=0)
    cut = PTBTask(**sizes).build(seed=0)
    for split in ("val", "test"):
        cut.streams[split] = cut.streams[split][: 3 * 10 + 1]  # 3 windows of 10 (+1 target)
    torch.manual_seed(0)
    model = capped.build_model(len(capped.space))
    fn = lambda b: HyperBatch.fixed(capped.space, capped.space.init(), b)  # noqa: E731
    for split in ("val", "test"):
        a, b = capped.evaluate(model, fn, split), cut.evaluate(model, fn, split)
        assert a == b and a != PTBTask(**sizes).build(seed=0).evaluate(model, fn, split)

    cifar = dict(data_dir=str(data["cifar10"]), width=1 / 16, batch=32, eval_batch=30)
    capped = Cifar10Task(**cifar, eval_batches=2).build(seed=0)
    cut = Cifar10Task(**cifar).build(seed=0)
    cut.splits = {k: (x[:60], y[:60]) for k, (x, y) in cut.splits.items()}
    model = capped.build_model(0)
    fn = lambda b: HyperBatch.fixed(capped.space, capped.space.init(), b)  # noqa: E731
    for split in ("val", "test"):
        assert capped.evaluate(model, fn, split) == cut.evaluate(model, fn, split)


def test_fractional_epochs_count_capped_epochs():
    """1.5 epochs of 4 steps: 6 steps, evaluated at epochs 1 and 1.5 (the fixed loop)."""
    problem = DigitsTask(hidden=8, epoch_steps=4).build(seed=0)
    rows = []
    result = train_fixed(problem, None, FixedConfig(epochs=1.5), log=rows.append)
    assert result.steps == 6 and [r["epoch"] for r in rows] == [1.0, 1.5]


def _fixed_run(problem, path, rows, stop=None):
    cfg = FixedConfig(epochs=4, lr=1.0, grad_clip=0.25)
    result = train_fixed(problem, None, cfg, log=rows.append, checkpoint_path=path,
                         on_resume=lambda n: rows.__delitem__(slice(n, None)),
                         stop_after_steps=stop)  # fmt: skip
    return result


def _stn_run(problem, path, rows, stop=None):
    cfg = STNConfig(epochs=4, lr=1.0, grad_clip=0.25, train_steps=2, val_steps=1)
    result = train(problem, cfg, log=rows.append, checkpoint_path=path,
                   on_resume=lambda n: rows.__delitem__(slice(n, None)),
                   stop_after_steps=stop)  # fmt: skip
    return result


@pytest.mark.parametrize("loop", [_fixed_run, _stn_run], ids=["fixed", "stn"])
def test_a_cut_capped_run_resumes_onto_the_same_batches(loop, data, tmp_path):
    """4 capped epochs of 8 windows go around the tiny corpus (~23 windows); cut mid-epoch 1,
    then resumed: the same rows and numbers as a run never cut (bit-identical on CPU)."""
    task = PTBTask(data_dir=str(data["tiny"]), emb=8, hidden=8, batch=4, bptt=10,
                   eval_batch=2, epoch_steps=8, eval_batches=2)  # fmt: skip
    ref_rows, rows = [], []  # the cut run's rows, kept up to its checkpoint on resume
    ref = loop(task.build(seed=0), tmp_path / "ref.pt", ref_rows)
    assert ref.steps == 32
    cut = loop(task.build(seed=0), tmp_path / "cut.pt", rows, stop=11)
    assert cut.status == "interrupted" and cut.steps == 11
    again = loop(task.build(seed=0), tmp_path / "cut.pt", rows)
    untimed = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    assert untimed(rows) == untimed(ref_rows)
    assert (again.steps, again.val_loss, again.test_loss) == (ref.steps, ref.val_loss,
                                                              ref.test_loss)  # fmt: skip


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,setting,message",
    [
        (PTBTask, {"epoch_steps": 0}, "PTBTask.epoch_steps must be > 0, got 0"),
        (PTBTask, {"eval_batches": -2}, "PTBTask.eval_batches must be > 0, got -2"),
        (Cifar10Task, {"epoch_steps": -1}, "Cifar10Task.epoch_steps must be > 0, got -1"),
        (Cifar10Task, {"eval_batches": 0}, "Cifar10Task.eval_batches must be > 0, got 0"),
        (DigitsTask, {"epoch_steps": 0}, "DigitsTask.epoch_steps must be > 0, got 0"),
        (DigitsTask, {"eval_batches": 0}, "DigitsTask.eval_batches must be > 0, got 0"),
    ],
)
def test_a_cap_below_one_is_a_one_line_error(task, setting, message):
    with pytest.raises(TaskError) as e:
        task(**setting)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_cap_on_the_command_line_is_one_error_line(tmp_path, capsys):
    from experiments.cli import main

    argv = ["run", "ptb-lstm", "--smoke", "--launcher", "debug", "--runs-dir",
            str(tmp_path / "runs"), "--set", "task.eval_batches=0"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "eval_batches must be > 0, got 0" in err[0]
    assert not (tmp_path / "runs").exists()
