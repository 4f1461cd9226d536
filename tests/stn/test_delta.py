"""Delta-STN's closed-form linearised response (stn.delta) against torch.func.jvp.

`Linearized` (forward-mode AD with every STN layer's tangent in closed form) must give the
outputs and gradients of `JVPLinearized` (torch.func.jvp through the layers' two-path forward)
for every layer kind, composed with the non-STN ops models use, and whole Delta-STN steps must
end where the jvp implementation ends.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn import HParam, Hyper, Space, STNConfig, train
from stn.delta import JVPLinearized, Linearized, at_centre
from stn.layers import STNConv2d, STNEmbedding, STNLinear
from stn.loop import _is_response, _Run
from stn.lstm import STNLSTM, _Tangent
from stn.regularizers import channel_dropout, dropout, locked_dropout

pytestmark = pytest.mark.usefixtures("one_thread")

B, N, V = 4, 3, 20
SPACE = Space.of(
    HParam("a", 0.0, 0.9, 0.3), HParam("b", 0.0, 0.9, 0.2), HParam("c", 1e-3, 1.0, 0.1, log=True)
)
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)
DEVICES = ["cpu", CUDA]


# --- models composing each layer kind with the ops around it --------------------------------
class MLP(nn.Module):
    """Linear layers on 2-d and 3-d inputs, ReLU, per-example dropout, a layer without bias."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = STNLinear(6, 8, N), STNLinear(8, 5, N, bias=False)

    def forward(self, x, hb):
        h = hb.net_input
        y = F.relu(self.fc1(x, h))
        if self.training:
            y = dropout(y, hb["a"])
        return self.fc2(y, h), self.fc2(torch.stack([y, 2 * y]), h)  # (B, 5), (2, B, 5)


class CNN(nn.Module):
    """Convs with ReLU, max-pooling, channel dropout, a conv without bias, a flatten, a linear."""

    def __init__(self):
        super().__init__()
        self.c1 = STNConv2d(3, 4, 3, N, padding=1)
        self.c2 = STNConv2d(4, 5, 3, N, stride=2, padding=1, bias=False)
        self.fc = STNLinear(5 * 2 * 2, 3, N)

    def forward(self, x, hb):
        h = hb.net_input
        y = F.max_pool2d(F.relu(self.c1(x, h)), 2)
        if self.training:
            y = channel_dropout(y, hb["b"])
        return self.fc(F.relu(self.c2(y, h)).flatten(1), h)


class LM(nn.Module):
    """Embedding (with its word dropout), locked dropout, a 2-layer LSTM with DropConnect and
    dropout between layers, a decoder; returns logits, the new state and per-layer outputs.
    `twice` runs the LSTM again from the state it left: a state that carries a tangent."""

    def __init__(self, twice: bool = False):
        super().__init__()
        self.twice = twice
        self.emb = STNEmbedding(V, 6, N)
        self.lstm = STNLSTM(6, 7, 2, N)
        self.dec = STNLinear(7, V, N)

    def forward(self, tokens, hb, state=None):
        h, train = hb.net_input, self.training
        x = self.emb(tokens, h, dropout=hb["b"][0] if train else 0.0)
        if train:
            x = locked_dropout(x, hb["a"])
        kw = {"dropconnect": hb["c"][0], "between": hb["a"]} if train else {}
        y, state, outs = self.lstm(x, h, state, **kw)
        if self.twice:
            y, state, outs = self.lstm(x, h, state, **kw)
        return self.dec(y, h), state, outs


def _randomise(model: nn.Module) -> nn.Module:
    """Every parameter random (V too), so each term of the response is non-zero."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _response(cls, model, call, device, mode: str):
    """Outputs of the response and the gradients of a loss on them w.r.t. the response
    parameters and the hyperparameters (through h), with fixed random draws."""
    torch.manual_seed(1)
    hyper = Hyper(SPACE, centred=True).to(device, torch.float64)
    hb = hyper.batch(B)
    ordinary = [p for n, p in model.named_parameters() if not _is_response(n)]
    net = cls(model, frozen=ordinary) if cls is Linearized else cls(model)
    net.hb = hb
    getattr(model, mode)()
    outs = _flat(call(net, hb))
    gen = torch.Generator(device).manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=gen, device=device, dtype=o.dtype)).sum()
               for o in outs)  # fmt: skip
    params = [p for n, p in model.named_parameters() if _is_response(n)]
    grads = torch.autograd.grad(loss, [*params, hyper.raw, hyper.raw_scale])
    return [o.detach() for o in outs], grads


def _assert_same(model, call, device, mode, tol=1e-10):
    model = _randomise(model).to(device, torch.float64)
    got = _response(Linearized, model, call, device, mode)
    want = _response(JVPLinearized, model, call, device, mode)
    for a, b in zip(got[0] + list(got[1]), want[0] + list(want[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert any(g.abs().sum() > 0 for g in got[1])  # the response moves something


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_linear_response_equals_jvp(device, mode):
    x = torch.randn(B, 6, dtype=torch.float64, device=device)
    _assert_same(MLP(), lambda net, hb: net(x, hb), device, mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_conv_response_equals_jvp(device, mode):
    x = torch.randn(B, 3, 8, 8, dtype=torch.float64, device=device)
    _assert_same(CNN(), lambda net, hb: net(x, hb), device, mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("twice", [False, True], ids=["once", "state-with-tangent"])
def test_embedding_and_lstm_response_equals_jvp(device, mode, twice):
    tokens = torch.randint(0, V, (5, B), device=device)
    state = tuple(torch.randn(2, B, 7, dtype=torch.float64, device=device) for _ in range(2))
    _assert_same(LM(twice), lambda net, hb: net(tokens, hb, state), device, mode)


@pytest.mark.parametrize("device", DEVICES)
def test_response_under_bf16_autocast_is_close_to_jvp(device):
    """Mixed precision (the GPU benchmark's --amp): the LSTM's recurrences in bf16 too."""
    model, tokens = _randomise(LM()).to(device), torch.randint(0, V, (5, B), device=device)
    got, want = [], []
    for cls, out in ((Linearized, got), (JVPLinearized, want)):
        torch.manual_seed(1)
        hb = Hyper(SPACE, centred=True).to(device).batch(B)
        ordinary = [p for n, p in model.named_parameters() if not _is_response(n)]
        net = cls(model, frozen=ordinary) if cls is Linearized else cls(model)
        net.hb = hb
        with torch.autocast(torch.device(device).type, torch.bfloat16):
            out += [o.float() for o in _flat(net(tokens, hb))]
    assert len(got) == len(want) == 5  # logits, state (h, c), the two layers' outputs
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= 0.05 * b.abs().max()


def test_lstm_tangent_recurrence_gradcheck():
    """The tangent recurrence's hand-written backward (the primal's backpropagation)."""
    T, H = 4, 3
    hs, cs = torch.randn(T + 1, B, H, dtype=torch.float64), torch.randn(T + 1, B, H).double()
    acts = torch.rand(T, B, 4 * H, dtype=torch.float64)
    acts[..., 2 * H : 3 * H] = 2 * acts[..., 2 * H : 3 * H] - 1  # tanh gate in (-1, 1)
    w = torch.randn(4 * H, H, dtype=torch.float64)
    a, dh0, dc0 = (torch.randn(*s, dtype=torch.float64, requires_grad=True)
                   for s in ((T, B, 4 * H), (B, H), (B, H)))  # fmt: skip

    def f(a, dh0, dc0):
        return _Tangent.apply(a, w, hs, cs, acts, dh0, dc0)

    assert torch.autograd.gradcheck(f, (a, dh0, dc0))


def test_lstm_linearisation_needs_frozen_ordinary_weights():
    lm = LM().double()
    net = Linearized(lm)  # nothing frozen
    net.hb = hb = Hyper(SPACE, centred=True).double().batch(B)
    with pytest.raises(RuntimeError, match="freeze them"):
        net(torch.randint(0, V, (3, B)), hb)


@pytest.mark.parametrize("model", [MLP, CNN, LM])
def test_layers_at_centre_are_the_two_path_forward_at_zero(model):
    """Delta-STN's ordinary step: inside at_centre the layers skip the hyper path, which at a
    zero input adds nothing; net_input stays a zero tensor for the rest of the problem."""
    m = _randomise(model()).double().eval()
    x = {MLP: torch.randn(B, 6), CNN: torch.randn(B, 3, 8, 8)}.get(model)
    x = torch.randint(0, V, (5, B)) if x is None else x.double()
    hb = Hyper(SPACE, centred=True).double().batch(B, perturb=False)
    assert torch.count_nonzero(hb.net_input) == 0
    calls = []
    for s in (mod for name, mod in m.named_modules() if _is_response(name)):
        s.register_forward_hook(lambda *_: calls.append(1))
    with at_centre():
        plain = _flat(m(x, hb))
    assert calls == []  # no hyper path ran
    for a, b in zip(plain, _flat(m(x, hb)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert calls  # outside the block the two paths run


# --- whole Delta-STN steps -------------------------------------------------------------------
class _JVPRun(_Run):
    """The Delta-STN weight step as it was: the ordinary step through both paths at h = 0,
    the response through torch.func.jvp."""

    def __init__(self, *args):
        super().__init__(*args)
        self.linearized = JVPLinearized(self.model)

    def weight_step(self, batch):
        n, train_loss = self._batch_size(batch), self.problem.train_loss
        self.model.train()
        self.step += 1
        with torch.no_grad():
            hb = self.hyper.batch(n, perturb=False)
        value = self._descend("ordinary", train_loss(self.model, batch, hb))
        with torch.no_grad():
            self.linearized.hb = hb = self.hyper.batch(n, perturb=True)
        self._descend("response", train_loss(self.linearized, batch, hb))
        return value


def _ptb(seed: int = 0):
    from experiments.data.ptb import Corpus
    from experiments.tasks import PTBTask
    from experiments.tasks.ptb import PTBProblem

    task = PTBTask(emb=8, hidden=8, batch=3, bptt=5, eval_batch=3)
    g = torch.Generator().manual_seed(seed)
    tokens = lambda n: torch.randint(0, V, (n,), generator=g)  # noqa: E731
    corpus = Corpus([f"w{i}" for i in range(V)], tokens(80), tokens(40), tokens(40))
    return PTBProblem(task, corpus, seed, "cpu")


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("problem", ["toy", "ptb"])
def test_delta_stn_steps_equal_the_jvp_implementation(toy_problem, problem):
    """Weight steps (ordinary + response) and hyper steps, from the same start and random
    draws: the weights, hyperparameters and losses end where the jvp implementation's do."""
    make = {"toy": toy_problem, "ptb": _ptb}[problem]
    cfg = STNConfig.delta_stn(train_steps=2, lr=0.5 if problem == "ptb" else 0.1)
    runs = [_Run(make(), cfg, None), _JVPRun(make(), cfg, None)]
    _randomise(runs[0].model)  # a non-zero response from the first step on
    runs[1].model.load_state_dict(runs[0].model.state_dict())
    for run in runs:
        run.hyper.double()  # stored as float32 whatever the default
    values = []
    for run in runs:
        torch.manual_seed(3)
        batches = list(run.problem.train_batches(0))[:4]
        values.append([run.weight_step(b) for b in batches] + [run.hyper_step()])
        values[-1] += [run.weight_step(b) for b in batches[:2]]
    torch.testing.assert_close(values[0], values[1], rtol=1e-9, atol=1e-9)
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(runs[0].hyper.raw, runs[1].hyper.raw, rtol=1e-9, atol=1e-9)
    assert not torch.equal(runs[0].hyper.raw, Hyper(runs[0].problem.space).raw)  # it moved


def test_delta_stn_trains_without_torch_func_jvp(toy_problem, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("stn.train used torch.func.jvp")

    monkeypatch.setattr(torch.func, "jvp", refuse)
    res = train(toy_problem(), STNConfig.delta_stn(epochs=3, warmup_steps=2))
    assert res.status == "ok" and res.trajectory_len > 0


def test_response_step_records_nothing_for_the_ordinary_weights(toy_problem):
    """The response's forward runs with the ordinary weights frozen (restored after), and its
    backward computes no gradient of them."""
    run = _Run(toy_problem(), STNConfig.delta_stn(), None)
    ordinary, frozen, fired = run.groups["ordinary"], [], []
    hooks = [p.register_hook(fired.append) for p in ordinary]
    model_forward = run.model.forward

    def forward(*args):
        frozen.append(not any(p.requires_grad for p in ordinary))
        return model_forward(*args)

    run.model.forward = forward
    batch = run.problem.train_batches(0)[0]
    run.linearized.hb = hb = run.hyper.batch(len(batch[0]))
    run.model.train()
    run._descend("response", run.problem.train_loss(run.linearized, batch, hb))
    assert frozen == [True] and fired == []
    assert all(p.requires_grad for p in ordinary)
    for h in hooks:
        h.remove()


def test_only_delta_stn_weights_step_with_the_fused_optimiser(toy_problem):
    """Delta-STN takes two weight steps a batch and steps them with PyTorch's fused kernel;
    STN keeps the per-tensor loop (the fused kernel rounds differently: its results stay
    bit-identical to earlier versions')."""
    delta, stn = (_Run(toy_problem(), cfg, None) for cfg in (STNConfig.delta_stn(), STNConfig()))
    assert all(delta.opts[k].defaults["fused"] for k in ("ordinary", "response"))
    assert not stn.opts["weights"].defaults["fused"]
    assert not delta.opts["hyper"].defaults.get("fused")
