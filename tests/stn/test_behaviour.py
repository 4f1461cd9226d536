"""STN does what it is for: it moves hyperparameters toward validation-optimal values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn import HParam, HyperBatch, Space, STNConfig, STNLinear, train
from stn.regularizers import dropout

pytestmark = pytest.mark.usefixtures("one_thread")


class Ridge:
    """Linear regression with a tuned L2 coefficient in the training objective only."""

    metric_name = "mse"

    def __init__(self, init: float, d: int = 40, n: int = 60, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        w = 0.3 * torch.randn(d, generator=g)
        x = torch.randn(n + 2000, d, generator=g)
        y = x @ w + torch.randn(len(x), generator=g)  # noise 1: a sizeable penalty helps
        self.data = {
            "train": (x[:n], y[:n]),
            "val": (x[n:-1000], y[n:-1000]),
            "test": (x[-1000:], y[-1000:]),
        }
        self.space = Space.of(HParam("l2", 1e-3, 5.0, init, log=True, perturb="batch"))

    def best_l2(self) -> float:
        """The validation-optimal coefficient: ridge solved in closed form on a fine grid."""
        (x, y), (xv, yv) = self.data["train"], self.data["val"]
        grid = torch.logspace(-4, 1, 2001, dtype=torch.float64)
        a, b = (x.T @ x / len(x)).double(), (x.T @ y / len(x)).double()
        eye = torch.eye(len(a), dtype=torch.float64)
        w = torch.stack([torch.linalg.solve(a + lam * eye, b) for lam in grid])  # (G, d)
        val = ((xv.double() @ w.T - yv.double()[:, None]) ** 2).mean(0)  # (G,)
        return float(grid[val.argmin()])

    def build_model(self, n_hyper: int) -> nn.Module:
        return STNLinear(self.data["train"][0].shape[1], 1, n_hyper, bias=False)

    def train_batches(self, epoch: int):
        x, y = self.data["train"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        return [(x[i], y[i]) for i in order.split(20)]

    def val_batches(self, epoch: int):
        x, y = self.data["val"]
        return [(x[i : i + 250], y[i : i + 250]) for i in range(0, len(x), 250)]

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def train_loss(self, model, batch, hb: HyperBatch):
        # the effective weights of this batch's lambda: W + s_w(h) * W_hyper (one h per batch)
        s_w = model.scaling(hb.net_input[:1]).chunk(2, dim=-1)[0]  # (1, 1)
        w = model.weight + s_w.T * model.hyper_weight
        return self.val_loss(model, batch, hb) + hb["l2"][0] * (w**2).sum()

    def val_loss(self, model, batch, hb: HyperBatch):
        return F.mse_loss(model(batch[0], hb.net_input)[:, 0], batch[1])

    def evaluate(self, model, hyper_fn, split: str) -> dict[str, float]:
        x, y = self.data[split]
        loss = float(F.mse_loss(model(x, hyper_fn(len(x)).net_input)[:, 0], y))
        return {"loss": loss, "metric": loss}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


RIDGE = dict(epochs=100, warmup_epochs=5, optimizer="adam", lr=0.03, hyper_lr=0.03, scale_lr=0.03)


@pytest.mark.parametrize(
    "cfg, init",
    [(STNConfig(**RIDGE), 0.01), (STNConfig.delta_stn(**RIDGE, train_steps=2), 3.0)],
    ids=["stn-from-below", "delta-stn-from-above"],
)
def test_ridge_coefficient_moves_to_the_validation_optimum(cfg, init):
    problem = Ridge(init)
    best = problem.best_l2()
    assert 0.05 < best < 0.5  # interior, and far from both starts
    res = train(problem, cfg)
    start, end = abs(math.log(init / best)), abs(math.log(res.final_hparams["l2"] / best))
    assert end < 0.25 * start, (best, res.final_hparams)


class DigitsMLP(nn.Module):
    def __init__(self, n_hyper: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = STNLinear(64, hidden, n_hyper), STNLinear(hidden, 10, n_hyper)

    def forward(self, x, hb: HyperBatch):  # x (B, 64) -> logits (B, 10)
        h = torch.relu(self.fc1(x, hb.net_input))
        if self.training:
            h = dropout(h, hb["dropout"])  # per-example rate (B,)
        return self.fc2(h, hb.net_input)


class Digits:
    """scikit-learn's digits, a fixed split with a small training set (so it overfits)."""

    metric_name = "accuracy"

    def __init__(self, n_train: int = 300, batch: int = 32, init: float = 0.05, hidden: int = 128):
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        x, y = x[order], y[order]
        self.data = {
            "train": (x[:n_train], y[:n_train]),
            "val": (x[-1000:-500], y[-1000:-500]),
            "test": (x[-500:], y[-500:]),
        }
        self.batch, self.hidden = batch, hidden
        self.space = Space.of(HParam("dropout", 0.0, 0.95, init))

    def build_model(self, n_hyper: int) -> nn.Module:
        return DigitsMLP(n_hyper, self.hidden)

    def train_batches(self, epoch: int):
        x, y = self.data["train"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        return [(x[i], y[i]) for i in order.split(self.batch)]

    def val_batches(self, epoch: int):
        x, y = self.data["val"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(-1 - epoch))
        return [(x[i], y[i]) for i in order.split(100)]

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def train_loss(self, model, batch, hb):
        return F.cross_entropy(model(batch[0], hb), batch[1])

    val_loss = train_loss

    def evaluate(self, model, hyper_fn, split: str) -> dict[str, float]:
        x, y = self.data[split]
        logits = model(x, hyper_fn(len(x)))
        acc = (logits.argmax(1) == y).float().mean()
        return {"loss": float(F.cross_entropy(logits, y)), "metric": float(acc)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def train_fixed(problem: Digits, cfg: STNConfig, steps: int) -> float:
    """The same network trained plainly (n_hyper=0) at the initial hyperparameters by the real
    fixed-hyperparameter loop, with the same optimiser (Adam) and number of weight steps;
    returns its final validation loss."""
    from experiments.fixed import FixedConfig
    from experiments.fixed import train_fixed as fixed_loop

    rows = []
    plain = FixedConfig(epochs=None, max_steps=steps, optimizer="adam", lr=cfg.lr, seed=cfg.seed)
    fixed_loop(problem, None, plain, log=rows.append)
    return [r for r in rows if r["kind"] == "eval"][-1]["val_loss"]


def test_digits_tuned_dropout_beats_its_initial_value_fixed():
    problem, rows = Digits(), []
    cfg = STNConfig(epochs=60, optimizer="adam", lr=3e-3, hyper_lr=0.03, scale_lr=0.03)
    res = train(problem, cfg, log=rows.append)
    assert res.status == "ok"
    assert abs(res.final_hparams["dropout"] - 0.05) > 0.05  # tuned: moved from its start
    stn_final = [r for r in rows if r["kind"] == "eval"][-1]["val_loss"]
    fixed_final = train_fixed(problem, cfg, res.steps)
    assert stn_final < fixed_final, (stn_final, fixed_final)
