"""The README's library example runs as shipped and tunes a hyperparameter."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_model.py"


@pytest.mark.usefixtures("one_thread")
def test_own_model_example(capsys):
    assert len(EXAMPLE.read_text().splitlines()) <= 60  # short enough to show in the README
    result = runpy.run_path(str(EXAMPLE), run_name="__main__")["result"]
    out = capsys.readouterr().out
    assert result.status == "ok" and result.steps == 10 * 20
    assert abs(result.hparams["dropout"] - 0.05) > 0.01  # tuned, not left at its start
    assert result.test_metric > 0.85  # a working classifier of the 10 digits
    assert f"tuned dropout {result.hparams['dropout']:.3f} (from 0.05)" in out
    assert f"test accuracy {result.test_metric:.3f}" in out
