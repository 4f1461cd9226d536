"""STN's map of a hyperparameter (sigmoid / softplus) and what its layers are conditioned on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stn.hyper import Hyper, constrain, net_view, unconstrain
from stn.space import HParam, Space, SpaceError


def test_softplus_mapping_of_a_bounded_range_is_the_authors_ar_tar_map():
    """AR/TAR: the authors map u to softplus(u) on (0, inf) (lstm/utils.py); with
    mapping="softplus" STN does the same, capped at `high`, while baselines search (0, high)."""
    p = HParam("ar", 0.0, 4.0, 0.05, mapping="softplus")
    space = Space.of(p)
    u0 = unconstrain(space, {"ar": 0.05})
    assert u0.item() == pytest.approx(math.log(math.expm1(0.05)), rel=1e-5)  # inv_softplus
    u = torch.tensor([[-3.0], [0.0], [1.0], [10.0]])
    v = constrain(space, u)[:, 0]
    assert torch.allclose(v[:3], F.softplus(u[:3, 0]))
    assert v[3].item() == 4.0  # capped at high
    assert p.from_unit(0.5) == 2.0  # baselines: the box (0, 4)
    with pytest.raises(SpaceError, match="softplus"):
        HParam("k", 0, 4, 1, integer=True, mapping="softplus")
    with pytest.raises(SpaceError, match="unknown mapping"):
        HParam("a", 0.0, 1.0, 0.5, mapping="tanh")


def test_net_input_value_feeds_the_layers_the_hyperparameters_values():
    """--tune_all in the authors' lstm/train.py feeds the hypernetwork sigmoid(u) for dropouts
    and softplus(u) for AR/TAR: the values themselves. net_input="raw" feeds u."""
    space = Space.of(
        HParam("drop", 0.0, 1.0, 0.05, net_input="value"),
        HParam("ar", 0.0, 4.0, 0.05, mapping="softplus", net_input="value"),
        HParam("other", 0.0, 1.0, 0.3),  # raw
    )
    torch.manual_seed(0)
    hyper = Hyper(space, sigma_init=1.0)
    hb = hyper.batch(64)
    assert torch.allclose(hb.net_input[:, :2], hb.values[:, :2])
    u = torch.logit(hb.values[:, 2].double()).float()  # "other" is raw: its logit
    assert torch.allclose(hb.net_input[:, 2], u, atol=1e-4)
    hb0 = hyper.batch(3, perturb=False)
    assert torch.allclose(hb0.net_input[0, :2], torch.tensor([0.05, 0.05]), atol=1e-6)
    # the gradient of a loss on the input reaches the unconstrained values through the map
    (g,) = torch.autograd.grad(hyper.batch(4, perturb=False).net_input[:, 0].sum(), hyper.raw)
    assert g[0].item() == pytest.approx(4 * 0.05 * 0.95, rel=1e-4)  # 4 * sigmoid'(u0)


def test_centred_and_anchored_inputs_are_zero_at_their_origin_in_both_views():
    space = Space.of(HParam("a", 0.0, 1.0, 0.2, net_input="value"), HParam("b", 0.0, 1.0, 0.7))
    for kw in ({"centred": True}, {"anchored": True}):
        hb = Hyper(space, **kw).batch(5, perturb=False)
        assert torch.count_nonzero(hb.net_input) == 0, kw
    plain = Hyper(space).batch(2, perturb=False).net_input[0]
    assert plain[0].item() == pytest.approx(0.2) and plain[1].item() == pytest.approx(
        math.log(0.7 / 0.3), rel=1e-5
    )
    assert torch.equal(net_view(space, torch.zeros(1, 2))[0, 1], torch.tensor(0.0))
