"""The STN loop's contracts: steps touch only what they own, rows, results, bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from stn import STNConfig, train
from stn.delta import Linearized
from stn.loop import ConfigError, _Run
from stn.schedule import Plateau

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize(
    "cfg",
    [STNConfig(), STNConfig(tune_scales=False), STNConfig.delta_stn()],
    ids=["stn", "stn-fixed-scales", "delta-stn"],
)
def test_hyper_step_computes_no_weight_gradient(toy_problem, cfg):
    problem = toy_problem()
    val_loss, frozen = problem.val_loss, []

    def recording_val_loss(model, batch, hb):  # were the weights frozen while it ran?
        frozen.append(not any(p.requires_grad for p in model.parameters()))
        return val_loss(model, batch, hb)

    problem.val_loss = recording_val_loss
    run = _Run(problem, cfg, None)
    run.weight_step(run.problem.train_batches(0)[0])  # Delta-STN: V = 0 has no response yet
    computed = []
    for p in run.model.parameters():  # a tensor hook fires whenever its gradient is computed
        p.register_hook(lambda g: computed.append(g))
    weights, raw, scale = snapshot(run.model), run.hyper.raw.clone(), run.hyper.raw_scale.clone()
    run.hyper_step()
    assert frozen and all(frozen)  # the forward recorded nothing for the weights
    assert all(p.requires_grad for p in run.model.parameters())  # restored after
    assert computed == []
    assert all(p.grad is None for p in run.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, run.model.parameters()))
    assert not torch.equal(raw, run.hyper.raw)
    assert torch.equal(scale, run.hyper.raw_scale) != cfg.tune_scales  # moved iff tuned
    assert run.hyper.raw.grad is None and run.hyper.raw_scale.grad is None


def test_weight_step_leaves_hyperparameters_alone(toy_problem):
    run = _Run(toy_problem(), STNConfig(), None)
    weights, hyper = snapshot(run.model), snapshot(run.hyper)
    run.weight_step(run.problem.train_batches(0)[0])
    assert all(torch.equal(a, b) for a, b in zip(hyper, run.hyper.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(weights, run.model.parameters()))
    assert all(p.grad is None for p in [*run.model.parameters(), *run.hyper.parameters()])


def test_delta_stn_updates_ordinary_weights_at_the_current_hyperparameters(toy_problem):
    cfg = STNConfig.delta_stn(momentum=0.0)
    run = _Run(toy_problem(), cfg, None)
    scalings = [p for n, p in run.model.named_parameters() if "scaling" in n]
    assert scalings and all(torch.count_nonzero(p) == 0 for p in scalings)  # V starts at 0
    batch = run.problem.train_batches(0)[0]
    ordinary = [p for p in run.groups["ordinary"]]
    # expected: one SGD step on the training loss at the unperturbed lambda (centred h = 0)
    rng = torch.get_rng_state()
    hb = run.hyper.batch(len(batch[0]), perturb=False)
    assert torch.count_nonzero(hb.net_input) == 0
    run.model.train()
    grads = torch.autograd.grad(run.problem.train_loss(run.model, batch, hb), ordinary)
    expected = [(p - cfg.lr * g).detach() for p, g in zip(ordinary, grads)]
    torch.set_rng_state(rng)
    run.weight_step(batch)
    assert all(torch.allclose(p, e, atol=1e-7) for p, e in zip(ordinary, expected))
    assert any(torch.count_nonzero(p) for p in scalings)  # the response moved, at lambda~


def test_linearized_response_is_first_order_in_the_perturbation(toy_problem):
    problem = toy_problem()
    run = _Run(problem, STNConfig.delta_stn(), None)
    for p in run.model.parameters():
        torch.nn.init.normal_(p, std=0.5)  # a non-zero response to linearise
    run.model.eval()
    lin, x = Linearized(run.model), problem.split["val"][0]
    lin.hb = at_centre = run.hyper.batch(len(x), perturb=False)
    assert torch.equal(lin(x, at_centre), run.model(x, at_centre))  # exact at the centre
    errors = []
    for scale in (1e-1, 1e-2):
        with torch.no_grad():
            run.hyper.raw_scale.fill_(math.log(math.expm1(scale)))  # sigma = scale
            torch.manual_seed(0)
            lin.hb = hb = run.hyper.batch(len(x), perturb=True)
            response = (run.model(x, hb) - run.model(x, at_centre)).abs().mean()
            errors.append((lin(x, hb) - run.model(x, hb)).abs().mean() / response)
    # relative error of a first-order expansion: O(h), so x10 smaller h gives it ~x10 smaller
    assert 0 < errors[1] < min(errors[0] / 5, 0.05)


def test_rows_evaluations_and_result(toy_problem):
    rows = []
    res = train(toy_problem(), STNConfig(epochs=4, warmup_epochs=1, hyper_lr=0.05), log=rows.append)
    hyper_rows = [r for r in rows if r["kind"] == "hyper"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["row"] for r in rows] == list(range(len(rows)))
    assert len(hyper_rows) == res.trajectory_len == (4 * 4 - 4) // 2  # no hyper step in warm-up
    assert all(set(r["hparams"]) == set(r["sigmas"]) == {"dropout", "noise"} for r in rows)
    assert all(math.isfinite(r["val_batch_loss"]) for r in hyper_rows)
    assert [r["epoch"] for r in evals] == [1.0, 2.0, 3.0, 4.0]  # epochs trained: steps / 4
    walls = [r["wall_s"] for r in rows]
    assert walls == sorted(walls) and 0 < walls[-1] <= res.wall_s
    best = min(evals[1:], key=lambda r: r["val_loss"])  # the warm-up's evaluation is not a best
    assert res.val_loss == best["val_loss"] and res.best_step == best["step"]
    assert res.hparams == best["hparams"] and res.final_hparams == evals[-1]["hparams"]
    assert res.hparams != toy_problem().space.init()  # the hyperparameters moved
    # the returned model holds the best weights AND the hyperparameters of that moment
    with torch.no_grad():
        hyper_fn = lambda b: res.hyper.batch(b, perturb=False)  # noqa: E731
        again = toy_problem().evaluate(res.model.eval(), hyper_fn, "val")
    assert again["loss"] == pytest.approx(res.val_loss, abs=1e-6)
    record = res.as_record()
    from experiments.store import RESULT_KEYS  # the run store's contract, not a copy of it

    assert set(RESULT_KEYS) <= set(record)
    assert (record["status"], record["epochs"], record["steps"]) == ("ok", 4.0, 16)
    assert record["spent"] == {"epochs": 4.0, "seconds": res.wall_s} and record["reason"] is None


def test_warm_up_evaluations_are_neither_best_nor_plateau_history(toy_problem, tmp_path):
    """As the authors' CNN code, whose best record and plateau history start after the warm-up:
    the warm-up's evaluations are logged, but a better one there is not the run's best, and
    the learning-rate rule never sees them."""
    problem = toy_problem()
    losses = iter([0.1, 0.2, 0.9, 0.8, 0.7, 0.6])  # the warm-up's two evaluations are the best
    evaluate = problem.evaluate
    problem.evaluate = lambda m, f, split: {
        **evaluate(m, f, split),
        **({"loss": next(losses)} if split == "val" else {}),
    }
    path = tmp_path / "ck.pt"
    cfg = STNConfig(epochs=6, warmup_epochs=2, lr_decay=0.5, decay_window=1)
    rows = []
    res = train(problem, cfg, log=rows.append, checkpoint_path=path)
    assert [r["val_loss"] for r in rows if r["kind"] == "eval"] == [0.1, 0.2, 0.9, 0.8, 0.7, 0.6]
    assert res.val_loss == 0.6 and res.best_step == 24
    plateau = torch.load(path, weights_only=False)["plateau"]
    assert plateau["history"] == [0.9, 0.8, 0.7, 0.6] and plateau["decays"] == 0


def test_a_run_that_never_leaves_its_warm_up_reports_its_best_warm_up_evaluation(toy_problem):
    problem = toy_problem()
    losses = iter([0.3, 0.2])  # the second of its two (warm-up) evaluations is the best
    evaluate = problem.evaluate
    problem.evaluate = lambda m, f, split: {
        **evaluate(m, f, split),
        **({"loss": next(losses)} if split == "val" else {}),
    }
    rows = []
    res = train(problem, STNConfig(epochs=2, warmup_epochs=5), log=rows.append)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["val_loss"] for r in evals] == [0.3, 0.2]
    assert res.status == "ok" and res.val_loss == 0.2 and res.best_step == evals[1]["step"]


@pytest.mark.parametrize("final", ["best", "last"])
def test_final_hparams_last_reports_the_best_weights_at_the_last_hyperparameters(
    toy_problem, final
):
    """final_hparams="last" reproduces the authors' CIFAR evaluation (their reload of the best
    checkpoint kept the last hyperparameters); "best" reports the best evaluation as it was."""
    problem, calls = toy_problem(), []
    evaluate = problem.evaluate

    def worse_later(model, hyper_fn, split):  # the 3rd to 5th evaluations look worse
        out = evaluate(model, hyper_fn, split)
        calls.append(split)
        return {**out, "loss": out["loss"] + 10} if 3 <= calls.count("val") <= 5 else out

    problem.evaluate, rows = worse_later, []
    cfg = STNConfig(epochs=5, hyper_lr=0.2, final_hparams=final)
    res = train(problem, cfg, log=rows.append)
    evals = [r for r in rows if r["kind"] == "eval"]
    best = min(evals, key=lambda r: r["val_loss"])
    assert res.best_step == best["step"] and res.final_hparams == evals[-1]["hparams"]
    with torch.no_grad():  # the returned model and hyper are what the numbers were computed at
        hyper_fn = lambda b: res.hyper.batch(b, perturb=False)  # noqa: E731
        again = toy_problem().evaluate(res.model.eval(), hyper_fn, "val")
    assert again["loss"] == pytest.approx(res.val_loss, abs=1e-6)
    assert res.best_step <= 8 and calls.count("val") == (5 if final == "best" else 6)
    if final == "best":
        assert res.val_loss == best["val_loss"] and res.hparams == best["hparams"]
    else:
        assert res.hparams == res.final_hparams != best["hparams"]
        assert res.val_loss != best["val_loss"]


def test_max_steps_stops_mid_epoch_and_records_the_fraction(toy_problem):
    rows = []
    res = train(toy_problem(), STNConfig(epochs=10, max_steps=6), log=rows.append)
    assert (res.status, res.steps, res.epochs) == ("ok", 6, 1.5)  # 4 batches an epoch
    assert rows[-1]["kind"] == "eval" and (rows[-1]["step"], rows[-1]["epoch"]) == (6, 1.5)


def test_evaluate_every_and_the_final_evaluation(toy_problem):
    rows = []
    train(toy_problem(), STNConfig(epochs=3, evaluate_every=2), log=rows.append)
    evals = [(r["epoch"], r["step"]) for r in rows if r["kind"] == "eval"]
    assert evals == [(2.0, 8), (3.0, 12)]  # every 2 epochs, and the end state once


def test_nan_loss_returns_diverged(toy_problem):
    problem = toy_problem()
    loss = problem.train_loss
    problem.train_loss = lambda m, b, hb: loss(m, b, hb) * (math.nan if problem.calls > 5 else 1)
    res = train(problem, STNConfig(epochs=5))
    assert res.status == "diverged" and res.steps == 6
    assert res.reason == "non-finite training loss (nan) at step 6"
    record = res.as_record()
    assert record["status"] == "diverged" and record["val_loss"] == res.val_loss  # epoch 1's


def test_patience_stops_the_run(toy_problem):
    problem = toy_problem()
    problem.evaluate = lambda model, hyper_fn, split: {"loss": 1.0, "metric": 0.5}
    res = train(problem, STNConfig(epochs=50, patience=2))
    assert res.status == "ok" and res.epochs == 3  # the first evaluation, then two without gain
    assert res.reason == "no improvement in 2 evaluations"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": -1}, "epochs must be >= 1"),
        ({"train_steps": 0}, "train_steps must be >= 1"),
        ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'; valid: sgd, adam, rmsprop"),
        ({"hyper_optimizer": "lbfgs"}, "unknown hyper_optimizer"),
        ({"epochs": 2.5}, "epochs must be int"),
        ({"tune_scales": "yes"}, "tune_scales must be bool"),
        ({"lr": 0}, "lr must be > 0"),
        ({"momentum": 1.0}, "momentum must be in"),
        ({"linearize": True}, "linearize is a Delta-STN option"),
        ({"diverge_after": -1}, "diverge_after must be >= 0"),
        ({"device": "gpu0"}, "unknown device"),
        ({"epoch": 3}, "unknown STNConfig keys ['epoch']; valid: epochs, max_steps"),
    ],
)
def test_bad_configuration_fails_with_one_line(overrides, message):
    with pytest.raises(ValueError) as err:
        STNConfig.from_dict(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_setup_fails_before_training(toy_problem):
    problem = type("NotAProblem", (), {"space": toy_problem().space})()
    with pytest.raises(ConfigError, match="problem lacks build_model, .*val_loss"):
        train(problem, STNConfig())
    with pytest.raises(ConfigError, match="unknown STNConfig keys"):
        STNConfig.delta_stn(sigma=1.0)


def test_a_model_deaf_to_the_hyperparameters_is_refused(toy_problem):
    problem = toy_problem()

    def val_loss(model, batch, hb):  # the net_input never reaches the STN layers
        deaf = type(hb)(hb.space, hb.values, hb.net_input.detach())
        return torch.nn.functional.cross_entropy(model(batch[0], deaf), batch[1])

    problem.val_loss = val_loss
    with pytest.raises(ConfigError, match="does not depend on the hyperparameters"):
        train(problem, STNConfig(epochs=1))


def test_plateau_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    plateau = Plateau(factor=0.5, window=2, patience=10, min_lr=0.3, reset=True)
    stops = [plateau.step(v, [opt]) for v in (3.0, 2.0, 2.5, 2.6, 2.7)]
    assert opt.param_groups[0]["lr"] == 0.5 and plateau.decays == 1  # 2.7 > min(3.0, 2.0)
    assert stops == [False] * 5
    state = plateau.state_dict()
    stops = [plateau.step(v, [opt]) for v in (2.8, 2.9, 3.0, 3.1)]  # the window starts afresh
    assert opt.param_groups[0]["lr"] == 0.25 and stops == [False, False, False, True]
    assert "below min_lr" in plateau.reason
    fresh = Plateau(factor=0.5, window=2, patience=10, min_lr=0.3, reset=True)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    off = Plateau()  # every rule off by default
    assert not any(off.step(v, [opt]) for v in range(100))
    patient = Plateau(patience=2)
    assert [patient.step(v) for v in (1.0, 1.0, 1.0)] == [False, False, True]
    with pytest.raises(ValueError, match="factor"):
        Plateau(factor=2.0)
