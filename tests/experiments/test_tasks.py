"""Tasks: each builds on (synthetic) data in the real formats and trains plain and as an STN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from experiments.data import DataError
from experiments.data.synthetic import write_cifar10, write_ptb
from experiments.tasks import TASKS, AlexNet, Cifar10Task, DigitsTask, PTBTask
from stn.hyper import Hyper, HyperBatch
from stn.problem import Problem
from stn.space import SpaceError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root / "cifar", n_train=120, n_test=40)
    write_ptb(root / "ptb", n_lines=60, vocab=40)
    return root


def tiny(name: str, data) -> object:
    return {
        "digits": DigitsTask(hidden=8),
        "cifar10": Cifar10Task(data_dir=str(data / "cifar"), width=1 / 16, data_limit=48, batch=16),
        "ptb": PTBTask(data_dir=str(data / "ptb"), emb=8, hidden=8, batch=4, bptt=6, eval_batch=2),
    }[name]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_trains_plain_and_as_stn(name, data):
    task = tiny(name, data)
    problem = task.build(seed=0, device="cpu")
    assert isinstance(problem, Problem) and problem.space == task.space()
    space = problem.space
    for n_hyper in (0, len(space)):
        torch.manual_seed(0)
        model = problem.build_model(n_hyper)
        hyper = Hyper(space) if n_hyper else None
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _, batch in zip(range(2), problem.train_batches(0)):
            n = problem.batch_size(batch)
            hb = hyper.batch(n) if hyper else HyperBatch.fixed(space, space.init(), n)
            model.train()
            loss = problem.train_loss(model, batch, hb)
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
        batch = next(iter(problem.val_batches(0)))
        model.eval()
        n = problem.batch_size(batch)
        hb = hyper.batch(n, perturb=False) if hyper else HyperBatch.fixed(space, space.init(), n)
        val = problem.val_loss(model, batch, hb)
        if hyper:  # the validation loss reaches the hyperparameters through the STN layers
            (grad,) = torch.autograd.grad(val, hyper.raw)
            assert grad.abs().sum() > 0
            fn = lambda b, h=hyper: h.batch(b, perturb=False)  # noqa: E731
        else:
            fn = lambda b: HyperBatch.fixed(space, space.init(), b)  # noqa: E731
        model.train()
        for split in ("val", "test"):
            out = problem.evaluate(model, fn, split)
            assert math.isfinite(out["loss"]) and math.isfinite(out["metric"])
        assert model.training is True  # evaluate restores the mode it found


def test_evaluate_is_the_mean_over_the_whole_split_in_eval_mode():
    problem = DigitsTask(hidden=8).build(seed=0, device="cpu")
    problem.eval_batch = 7  # many batches, the last one shorter
    x, y = problem.splits["val"]
    assert len(y) > 3 * problem.eval_batch and len(y) % problem.eval_batch != 0
    space = problem.space
    fn = lambda b: HyperBatch.fixed(space, space.init(), b)  # noqa: E731
    torch.manual_seed(0)
    model = problem.build_model(0)
    model.train()  # evaluate must switch dropout off
    out = problem.evaluate(model, fn, "val")
    model.eval()
    with torch.no_grad():
        logits = model(problem.inputs(x), fn(len(y)))
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert out["metric"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())


@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_batch_order_is_fixed_by_seed_and_epoch(name, data):
    task = tiny(name, data)
    first = lambda seed, epoch: next(iter(task.build(seed).train_batches(epoch)))[1]  # noqa: E731
    assert torch.equal(first(0, 0), first(0, 0))
    assert not torch.equal(first(0, 0), first(0, 1))
    assert not torch.equal(first(0, 0), first(1, 0))


def test_cifar10_space_is_the_papers():
    space = Cifar10Task().space()
    assert len(space) == 15
    assert all(space[f"dropout_conv{i}"].high == 0.9 for i in range(1, 6))
    assert (space["input_noise"].high, space["hue"].high, space["input_dropout"].high) == (
        0.3,
        0.5,
        1.0,
    )
    length, holes = space["cutout_length"], space["cutout_holes"]
    assert (length.integer, length.low, length.high, length.init) == (True, 0, 24, 4)
    assert (holes.integer, holes.low, holes.high, holes.init) == (True, 0, 4, 1)
    others = [p for p in space if not p.integer]
    assert all(p.init == 0.05 for p in others)
    # the unconstrained init maps back to exactly 4 (no off-by-one of the authors' code)
    assert Hyper(space).current()["cutout_length"] == 4.0


def test_alexnet_has_the_papers_layer_shapes():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        plain, stn = AlexNet(n_hyper=0), AlexNet(n_hyper=15)
    convs = [(64, 3), (192, 64), (384, 192), (256, 384), (256, 256)]
    for conv, (out, inp) in zip(plain.convs, convs):
        assert conv.weight.shape == (out, inp, 3, 3) and conv.padding == (1, 1)
    assert [c.stride for c in plain.convs] == [(2, 2)] + [(1, 1)] * 4
    assert plain.fc1.weight.shape == (4096, 256 * 2 * 2)
    assert plain.fc2.weight.shape == (4096, 4096) and plain.fc3.weight.shape == (10, 4096)
    assert not any("hyper" in n or "scaling" in n for n, _ in plain.named_parameters())
    assert stn.fc1.hyper_weight.shape == (4096, 1024) and stn.fc1.scaling.weight.shape == (8192, 15)
    space = Cifar10Task().space()
    plain.eval()
    with torch.device("meta"):
        x = torch.empty(2, 3, 32, 32)
        assert plain(x, HyperBatch.fixed(space, space.init(), 2)).shape == (2, 10)


def test_ptb_tunes_a_subset_and_ties_weights(data):
    task = PTBTask(
        data_dir=str(data / "ptb"), emb=8, hidden=8, batch=4, bptt=6, eval_batch=2,
        tune=("output_dropout",), fixed={"input_dropout": 0.3},
    )  # fmt: skip
    assert task.space().names == ("output_dropout",)
    assert task.fixed_values() == {
        "input_dropout": 0.3, "hidden_dropout": 0.0, "embedding_dropout": 0.0,
        "dropconnect": 0.0, "ar_alpha": 0.0, "tar_beta": 0.0,
    }  # fmt: skip
    full = PTBTask().space()
    assert len(full) == 7 and all(p.init == 0.05 for p in full)
    per_batch = {p.name for p in full if p.perturb == "batch"}
    assert per_batch == {"embedding_dropout", "dropconnect", "ar_alpha", "tar_beta"}
    with pytest.raises(SpaceError, match="output_dropout"):
        PTBTask(tune=("output_dropout",), fixed={"output_dropout": 0.5}).fixed_values()
    model = task.build(0).build_model(1)
    assert model.decoder.weight is model.embedding.weight


def test_ptb_carries_the_hidden_state_between_windows(data):
    problem = tiny("ptb", data).build(0)
    model, space = problem.build_model(0), problem.space
    hb = HyperBatch.fixed(space, space.init(), 4)
    model.eval()
    batches = list(problem.train_batches(0))
    problem.train_loss(model, batches[0], hb)
    after0 = problem.carry["train"]["out"]
    problem.train_loss(model, batches[1], hb)
    assert problem.carry["train"]["in"] is after0  # window 1 starts where window 0 ended
    again = problem.train_loss(model, batches[1], hb)  # the same window twice: same start state
    assert problem.carry["train"]["in"] is after0
    saved = problem.state_dict()
    fresh = tiny("ptb", data).build(0)
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.train_loss(model, batches[1], hb), again)
    out = problem.evaluate(model, lambda b: HyperBatch.fixed(space, space.init(), b), "val")
    assert out["metric"] == pytest.approx(math.exp(out["loss"]))


def test_digits_weight_decay_is_in_the_training_objective_only():
    problem = DigitsTask(hidden=8).build(0)
    space, model = problem.space, problem.build_model(0)
    batch = next(iter(problem.train_batches(0)))
    losses = {}
    for wd in (1e-6, 1e-1):
        hb = HyperBatch.fixed(space, {**space.init(), "weight_decay": wd}, 64)
        model.eval()  # no dropout, no noise in the model: only the penalty differs
        torch.manual_seed(0)
        losses[wd] = (problem.train_loss(model, batch, hb), problem.val_loss(model, batch, hb))
    assert losses[1e-1][0] > losses[1e-6][0]
    assert torch.equal(losses[1e-1][1], losses[1e-6][1])


@pytest.mark.parametrize("task, missing", [
    (Cifar10Task, "data_batch_1"), (PTBTask, "ptb.train.txt"),
])  # fmt: skip
def test_missing_dataset_is_one_line_naming_file_and_command(task, missing, tmp_path):
    cfg = task(data_dir=str(tmp_path / "nowhere"))
    for check in (cfg.check_data, lambda: cfg.build(0)):  # before launching, and the loader
        with pytest.raises(DataError) as err:
            check()
        msg = str(err.value)
        assert "\n" not in msg and missing in msg and "python -m experiments download" in msg
    DigitsTask().check_data()


@pytest.mark.parametrize(
    "task, setting, message",
    [
        (DigitsTask, {"hidden": 0}, "DigitsTask.hidden must be > 0, got 0"),
        (DigitsTask, {"lr": -1.0}, "DigitsTask.lr must be > 0, got -1.0"),
        (DigitsTask, {"val_frac": 1.0}, "DigitsTask.val_frac must be in (0, 1), got 1.0"),
        (DigitsTask, {"optimizer": "lbfgs"}, "must be 'sgd' or 'adam' or 'rmsprop', got 'lbfgs'"),
        (DigitsTask, {"wd_range": (0.1, 0.01)}, "weight_decay: empty range (0.1, 0.01)"),
        (Cifar10Task, {"momentum": 1.0}, "Cifar10Task.momentum must be in [0, 1), got 1.0"),
        (Cifar10Task, {"lr_decay": 0.0}, "Cifar10Task.lr_decay must be in (0, 1], got 0.0"),
        (Cifar10Task, {"init": {"hue": 0.9}}, "hue: init 0.9 outside the range"),
        (PTBTask, {"bptt": 0}, "PTBTask.bptt must be > 0, got 0"),
        (PTBTask, {"dropout_max": 1.5}, "PTBTask.dropout_max must be in (0, 1], got 1.5"),
        (PTBTask, {"tune": ("output_dropout",), "fixed": {"bogus": 0.1}}, "fixed: ['bogus']"),
    ],
)
def test_a_bad_setting_fails_when_the_task_is_built(task, setting, message):
    with pytest.raises(ValueError) as e:  # TaskError or SpaceError: one line each
        task(**setting)
    assert message in str(e.value) and "\n" not in str(e.value)
