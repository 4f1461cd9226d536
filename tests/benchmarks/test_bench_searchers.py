"""The test-function comparison at tiny sizes: what it runs and how it reads, never timings."""

from __future__ import annotations

import math

import pytest
from threadpoolctl import threadpool_limits

from benchmarks import __main__ as bench_main
from benchmarks import bench_bo, bench_searchers
from benchmarks.bench_searchers import OPTUNA_REFERENCE, PROBLEMS, ours, render


def test_functions_have_their_known_minima():
    space, f, fmin = PROBLEMS["branin"]
    assert f({"x1": math.pi, "x2": 2.275}) == pytest.approx(fmin, abs=1e-6)
    space, f, fmin = PROBLEMS["hartmann6"]
    xs = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]
    assert f({f"x{i + 1}": x for i, x in enumerate(xs)}) == pytest.approx(fmin, abs=1e-5)


@pytest.mark.parametrize("method", ["random", "tpe", "bo"])
def test_ours_reports_the_best_and_the_faces(method):
    space, f, fmin = PROBLEMS["branin"]
    with threadpool_limits(limits=1):
        best, faces = ours(method, space, f, 0, 12)
    # 12 evaluations find a value far below Branin's median over the box (about 35)
    assert fmin <= best < 10 and all(isinstance(x, bool) for x in faces)
    assert len(faces) == {"random": 0, "tpe": 2, "bo": 7}[method]  # after n_initial (10, 5)


def _result(with_optuna: bool) -> dict:
    row = lambda v: {"median_best": v, "face_share": 0.25, "best": [v], "seconds": 1.0}  # noqa: E731
    fn = {"minimum": 0.397887, **{m: row(0.5) for m in bench_searchers.OURS}}
    if with_optuna:
        fn.update({m: row(0.6) for m in bench_searchers.OPTUNA})
    r = {"seeds": 10, "evaluations": 30, "functions": {"branin": fn}}
    return {**r, "optuna": "5.1.0"} if with_optuna else r


def test_render_uses_the_reference_without_optuna():
    lines = render(_result(with_optuna=False))
    gp = OPTUNA_REFERENCE["branin"]["optuna-gp"]
    assert f"| optuna-gp | {gp:.4g}* | - |" in lines and "| bo | 0.5 | 0.25 |" in lines
    assert "Optuna is not installed" in lines[-1]
    lines = bench_main.RENDERERS["searchers"](_result(with_optuna=True))
    assert "| optuna-gp | 0.6 | 0.25 |" in lines and "Optuna 5.1.0 measured" in lines[-1]


def test_optuna_in_the_same_protocol():
    pytest.importorskip("optuna")  # a benchmark-only extra: the suite runs without it
    space, f, fmin = PROBLEMS["branin"]
    best, faces = bench_searchers.optuna_run("optuna-tpe", space, f, 0, 12)
    assert fmin <= best < 10 and len(faces) == 2


def test_ask_seconds_is_positive():
    with threadpool_limits(limits=1):
        assert bench_bo.ask_seconds("tpe", n_obs=12, dim=3, repeats=1) > 0
