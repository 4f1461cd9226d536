import math

import pytest

from stn.space import HParam, Space, SpaceError


def space():
    return Space.of(
        HParam("drop", 0.0, 0.9, init=0.05),
        HParam("wd", 1e-6, 1e-1, init=1e-4, log=True, perturb="batch"),
        HParam("holes", 0, 4, init=1, integer=True),
        HParam("alpha", 0.0, math.inf, init=0.5),
    )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(name="a", low=1.0, high=1.0, init=1.0), "empty range"),
        (dict(name="a", low=0.0, high=1.0, init=2.0), "outside the range"),
        (dict(name="a", low=0.0, high=1.0, init=0.5, perturb="step"), "unknown perturb kind"),
        (dict(name="a", low=0.0, high=1.0, init=0.5, log=True), "needs low > 0"),
        (dict(name="a", low=0.0, high=4.5, init=1, integer=True), "integer ends"),
        (dict(name="a", low=0, high=4, init=1.5, integer=True), "integer init"),
        (dict(name="", low=0.0, high=1.0, init=0.5), "non-empty identifier"),
        (dict(name="a", low=0.0, high=float("nan"), init=0.5), "must be a number"),
    ],
)
def test_invalid_hparam_one_line_error(kwargs, words):
    with pytest.raises(SpaceError, match=words) as e:
        HParam(**kwargs)
    assert "\n" not in str(e.value)


def test_invalid_space():
    with pytest.raises(SpaceError, match="duplicate"):
        Space.of(HParam("a", 0, 1, 0.5), HParam("a", 0, 2, 0.5))
    with pytest.raises(SpaceError, match="valid: drop, wd, holes, alpha"):
        space()["nope"]
    with pytest.raises(SpaceError, match="missing"):
        space().validate({"drop": 0.1})
    with pytest.raises(SpaceError, match="half-bounded"):
        space()["alpha"].from_unit(0.5)


def test_unit_round_trip_and_ranges():
    s = space().subset(["drop", "wd", "holes"])
    for u in [0.0, 0.13, 0.5, 0.77, 1.0]:
        values = s.from_unit([u] * 3)
        s.validate(values)
        assert values["holes"] in {0.0, 1.0, 2.0, 3.0, 4.0}
        back = s.from_unit(s.to_unit(values))
        assert back == pytest.approx(values, rel=1e-9)
    # every integer is reachable, both ends included, with equal cells
    hits = [s["holes"].from_unit(i / 1000) for i in range(1000)]
    assert sorted(set(hits)) == [0, 1, 2, 3, 4]
    assert all(hits.count(k) == 200 for k in range(5))
    # log scale: the middle of the cube is the geometric mean
    assert s["wd"].from_unit(0.5) == pytest.approx(math.sqrt(1e-6 * 1e-1))
