"""`python -m experiments status`'s table: every column lines up whatever a state's length."""

from __future__ import annotations

from experiments.status import format_status


def row(method: str, **kw) -> dict:
    base = {"method": method, "seed": 0, "best_val_loss": 0.25, "jobs": []}
    return {**base, **kw}


def test_columns_line_up_with_long_states():
    rows = [
        row("stn", kind="run", status="ok", reason=None),
        row(
            "grid",
            kind="search",
            done=3,
            planned=4,
            running=0,
            failed=0,
            finished=True,
            reason="budget spent",
            jobs=["12_0", "12_1"],
        ),  # fmt: skip
        row("random", kind="run", status="failed", reason="ValueError: " + "x" * 60),
    ]
    lines = format_status(rows).splitlines()
    ends = {ln.index("best val") + len("best val") for ln in lines[:1]}
    ends |= {ln.index("0.2500") + len("0.2500") for ln in lines[1:]}
    assert len(ends) == 1, lines  # the losses end under the header
    assert lines[2].endswith("12_0,12_1") and lines[1].endswith("  -")
