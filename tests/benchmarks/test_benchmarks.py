"""Smoke tests of the benchmarks at tiny sizes: the structure of their results, never timings."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import bench_hpo, bench_report, bench_stn_cost, common


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bound_is_the_arithmetic_of_the_cycle():
    assert bench_stn_cost.bound(2, 1) == pytest.approx(16 / 6)
    assert bench_stn_cost.bound(1, 0) == pytest.approx(2.0)  # weight steps only: twice a plain
    assert bench_stn_cost.delta_bound(2, 1, linearize=False) > bench_stn_cost.bound(2, 1)


def test_stn_cost_quick_mlp(one_thread):
    res = bench_stn_cost.run(quick=True, only=("mlp",), memory=False)
    modes = res["networks"]["mlp"]["modes"]
    assert set(modes) == {"plain", "stn", "delta-stn"}
    for m in modes.values():
        assert _positive(m["s_per_batch"]) and _positive(m["examples_per_s"])
        assert _positive(m["cpu_s_per_batch"]) and m["samples"] >= 2
    stn = modes["stn"]
    assert _positive(stn["ratio"]) and _positive(stn["cpu_ratio"])
    assert stn["cycle"] == "2+1" and stn["target"] > stn["bound"] > 1
    assert isinstance(stn["within_target"], bool)
    assert _positive(modes["delta-stn"]["bound_estimate"])
    lines = bench_stn_cost.render(res)
    assert any(line.startswith("| mlp | stn |") for line in lines)


def test_stn_cost_memory_parts(one_thread):
    """One configuration's memory record, in process (the benchmark runs it in a subprocess)."""
    rec = bench_stn_cost.memory_child("mlp", "stn", quick=True, device="cpu", amp=False)
    assert rec["peak_growth_mb"] >= 0 and rec["measure"] == "peak RSS"
    for key in ("params_mb", "grads_mb", "optimizer_mb", "activations_mb"):
        assert _positive(rec[key]), key


def test_unknown_network_is_a_one_line_error():
    with pytest.raises(ValueError, match="valid: mlp, alexnet, lstm"):
        bench_stn_cost.run(quick=True, only=("resnet",))


def test_hpo_reads_a_store(tmp_path):
    bench_report.write_store(tmp_path, trials=8, seeds=2, epochs=4)
    res = bench_hpo.run(quick=True, runs_dir=tmp_path)
    assert set(res["methods"]) == {"grid", "random", "bo", "hyperband", "stn", "delta-stn"}
    for s in res["methods"].values():
        assert s["seeds"] == 2 and _positive(s["final_test_loss"]) and _positive(s["epochs"])
    for h in res["stn_vs_baselines"].values():
        assert h["seeds"] == 2 and 0 <= h["reached"] <= 2
        assert h["epochs_fraction"] is None or _positive(h["epochs_fraction"])
    assert all(p[0] > 0 and p[1] > 0 for p in res["curves"]["stn"]["0"])


def test_report_quick(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = bench_report.run(quick=True, trials=8)
    assert res["trials"] == 8
    for key in ("build_report_s", "build_report_cpu_s", "cli_s", "cli_cpu_s"):
        assert _positive(res[key]), key
    assert isinstance(res["within_target"], bool)


def test_machine_slug():
    info = {"cpu": "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", "cores": 8, "gpu": None}
    assert common.machine_slug(info) == "intel-xeon-e5-2680-v4-8c"
    info["gpu"] = "NVIDIA H100 80GB HBM3"
    assert common.machine_slug(info) == "intel-xeon-e5-2680-v4-8c-nvidia-h100-80gb-hbm3"


def test_main_writes_results_and_keeps_the_doc_prose(tmp_path):
    bench_report.write_store(tmp_path / "runs", trials=4, seeds=1, epochs=2)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nProse.\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nEnd.\n"
    )
    args = ["--quick", "--only", "hpo", "--runs-dir", str(tmp_path / "runs")]
    args += ["--results", str(tmp_path / "results"), "--doc", str(doc)]
    assert bench_main.main(args) == 0
    (path,) = (tmp_path / "results").glob("*.json")
    data = json.loads(path.read_text())
    assert path.stem == common.machine_slug(data["machine"])
    entry = data["benchmarks"]["hpo"]
    assert entry["quick"] is True and entry["date"] and "stn_vs_baselines" in entry["result"]
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nProse.") and text.endswith("End.\n")
    assert "old" not in text and "| stn |" in text and path.stem in text


def test_main_unknown_benchmark_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        bench_main.main(["--only", "nope"])
    assert e.value.code == 2
    assert "valid: stn_cost, augment, bo, hpo, report" in capsys.readouterr().err
