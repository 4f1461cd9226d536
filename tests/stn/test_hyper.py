import math

import pytest
import torch

from stn.hyper import Hyper, HyperBatch, constrain, unconstrain
from stn.space import Space, SpaceError
from tests.stn.test_space import space


def test_constrain_round_trip():
    s = space()
    values = {"drop": 0.3, "wd": 3e-3, "holes": 3.0, "alpha": 2.0}
    u = unconstrain(s, values)
    back = constrain(s, u[None])[0].tolist()
    assert all(math.isfinite(v) for v in back)
    assert abs(back[0] - 0.3) < 1e-5 and abs(math.log(back[1] / 3e-3)) < 1e-5
    assert back[2] == 3.0 and abs(back[3] - 2.0) < 1e-5
    # initial values are represented exactly, integers included (no off-by-one)
    h = Hyper(s)
    cur = h.current()
    assert cur["holes"] == 1.0 and abs(cur["drop"] - 0.05) < 1e-6


def test_samples_inside_ranges_and_integers_integral():
    torch.manual_seed(0)
    s = space()
    h = Hyper(s, sigma_init=3.0)  # wide perturbations reach the ends
    hb = h.batch(4096)
    assert hb.values.shape == (4096, len(s)) and hb.net_input.shape == (4096, len(s))
    for i, p in enumerate(s):
        col = hb.values[:, i]
        assert (col >= p.low).all() and (col <= p.high).all()
    holes = hb["holes"]
    assert torch.equal(holes, holes.floor())
    assert set(holes.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    # per-batch hyperparameters share one draw; per-example ones differ
    assert hb["wd"].unique().numel() == 1 and hb["drop"].unique().numel() > 100


def test_entropy_closed_form_and_gradients():
    s = space()
    h = Hyper(s, sigma_init=0.7)
    expected = len(s) * math.log(0.7 * math.sqrt(2 * math.pi * math.e))
    assert abs(h.entropy().item() - expected) < 1e-5
    # the entropy's gradient reaches the scales; perturbed values reach raw and raw_scale
    (h.entropy() + h.batch(8).net_input.sum()).backward()
    assert h.raw_scale.grad.abs().min() > 0 and h.raw.grad.abs().min() > 0


def test_centred_input_is_zero_without_perturbation():
    h = Hyper(space(), centred=True)
    assert torch.equal(h.batch(5, perturb=False).net_input, torch.zeros(5, 4))
    fixed = HyperBatch.fixed(space(), space().init(), 3)
    assert fixed.net_input is None and fixed["holes"].tolist() == [1.0, 1.0, 1.0]


def test_current_batch_is_reused_until_the_hyperparameters_change():
    """Delta-STN's ordinary steps take the unperturbed batch from a cache: the same object while
    raw is unchanged, a fresh one after any change (an optimiser step, a checkpoint load, an
    assignment through .data, which autograd's version counter does not see)."""
    h = Hyper(space(), centred=True)
    hb = h.current_batch(5)
    want = h.batch(5, perturb=False)
    assert torch.equal(hb.values, want.values) and torch.equal(hb.net_input, want.net_input)
    assert not hb.values.requires_grad and not hb.net_input.requires_grad  # no graph kept
    assert h.current_batch(5) is hb
    assert len(h.current_batch(3)) == 3  # another batch size: rebuilt

    def changes(step) -> None:
        before = h.current_batch(5)
        step()
        after = h.current_batch(5)
        assert after is not before
        assert torch.equal(after.values, h.batch(5, perturb=False).values)
        assert not torch.equal(after.values, before.values)

    opt = torch.optim.SGD([h.raw], lr=0.5)
    h.raw.grad = torch.ones_like(h.raw)
    changes(opt.step)
    state = {k: v.clone() for k, v in Hyper(space(), centred=True).state_dict().items()}
    changes(lambda: h.load_state_dict(state))
    changes(lambda: h.raw.data.add_(0.25))


def test_hyperbatch_columns_by_name_in_any_space():
    s = space()
    backwards = Space(tuple(reversed(s.params)))  # the same names in the other order
    for sp in (s, backwards, s):
        hb = Hyper(sp).batch(3)
        for i, name in enumerate(sp.names):
            assert torch.equal(hb[name], hb.values[:, i])
        with pytest.raises(SpaceError, match="valid: "):
            hb["nope"]
