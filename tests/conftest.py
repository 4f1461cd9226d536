"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn import HParam, HyperBatch, Space, STNLinear
from stn.regularizers import dropout


class _ToyMLP(nn.Module):
    def __init__(self, n_hyper: int):
        super().__init__()
        self.fc1, self.fc2 = STNLinear(8, 16, n_hyper), STNLinear(16, 3, n_hyper)

    def forward(self, x, hb: HyperBatch):  # x (B, 8) -> logits (B, 3)
        if self.training:
            x = x + hb["noise"][:, None] * torch.randn_like(x)
        h = torch.relu(self.fc1(x, hb.net_input))
        if self.training:
            h = dropout(h, hb["dropout"])
        return self.fc2(h, hb.net_input)


class ToyProblem:
    """A tiny, fast `stn.problem.Problem`: 3-class synthetic data, a 2-layer STN MLP, two
    hyperparameters (per-example dropout, per-batch input noise), 4 train batches per epoch,
    a validation stream of 2 batches, and a carried counter as problem state."""

    metric_name = "accuracy"

    def __init__(self, seed: int = 0, batch: int = 16):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(128, 8, generator=g)
        y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
        self.split = {
            "train": (x[:64], y[:64]),
            "val": (x[64:96], y[64:96]),
            "test": (x[96:], y[96:]),
        }
        self.seed, self.batch, self.calls = seed, batch, 0
        self.space = Space.of(
            HParam("dropout", 0.0, 0.9, 0.2), HParam("noise", 0.0, 0.5, 0.1, perturb="batch")
        )

    def build_model(self, n_hyper: int) -> nn.Module:
        return _ToyMLP(n_hyper)

    def _batches(self, split: str, epoch: int, salt: int):
        x, y = self.split[split]
        g = torch.Generator().manual_seed(1000 * self.seed + 10 * epoch + salt)
        order = torch.randperm(len(x), generator=g)
        return [(x[i], y[i]) for i in order.split(self.batch)]

    def train_batches(self, epoch: int):
        return self._batches("train", epoch, 1)

    def val_batches(self, epoch: int):
        yield from self._batches("val", epoch, 2)

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def train_loss(self, model, batch, hb):
        self.calls += 1
        return F.cross_entropy(model(batch[0], hb), batch[1])

    def val_loss(self, model, batch, hb):
        return F.cross_entropy(model(batch[0], hb), batch[1])

    def evaluate(self, model, hyper_fn, split: str) -> dict[str, float]:
        x, y = self.split[split]
        logits = model(x, hyper_fn(len(x)))
        acc = (logits.argmax(1) == y).float().mean()
        return {"loss": float(F.cross_entropy(logits, y)), "metric": float(acc)}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


@pytest.fixture
def toy_problem():
    """A factory of small STN problems (`toy_problem(seed=0)`), for loop tests."""
    return ToyProblem


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small tensors: more threads only add contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_SLURM_PROBE: list[str | None] = []  # the cluster probe runs once per session
_DEFAULT_MARKS = "not slow and not slurm"  # pyproject's addopts: what `make test` runs


def _slurm_unreachable() -> str | None:
    """Why no SLURM cluster answers (None when one does), asked once per session."""
    if not _SLURM_PROBE:
        from slurm.executors import slurm_unreachable

        _SLURM_PROBE.append(slurm_unreachable())
    return _SLURM_PROBE[0]


def pytest_collection_finish(session: pytest.Session) -> None:
    """With STN_REQUIRE_SLURM=1 (`make test-all`, CI) a missing cluster stops the run before
    the first test, rather than failing the SLURM tests after the others took minutes."""
    if os.environ.get("STN_REQUIRE_SLURM") != "1":
        return
    if any(item.get_closest_marker("slurm") for item in session.items):
        why = _slurm_unreachable()
        if why is not None:
            pytest.exit(f"STN_REQUIRE_SLURM=1 but {why}", returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.slurm` tests skip with the reason when no SLURM cluster answers
    (`slurm/local_cluster.sh up` starts one); with STN_REQUIRE_SLURM=1, as in CI, they fail."""
    if item.get_closest_marker("slurm") is None:
        return
    why = _slurm_unreachable()
    if why is not None:
        if os.environ.get("STN_REQUIRE_SLURM") == "1":
            pytest.fail(f"STN_REQUIRE_SLURM=1 but {why}", pytrace=False)
        pytest.skip(why)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Everything selected was left out by the default marks: say how to run it."""
    if (
        exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        and terminalreporter.stats.get("deselected")
        and config.option.markexpr == _DEFAULT_MARKS
    ):
        terminalreporter.write_line(
            f"every test selected here is marked slow or slurm, which the default "
            f"-m '{_DEFAULT_MARKS}' leaves out: add -m '' to run them (make test-all runs all)"
        )
