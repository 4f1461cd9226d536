"""Smoke tests of the benchmarks at tiny sizes: the structure of their results, never timings."""

from __future__ import annotations

import json
import math
import sys

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import bench_augment, bench_bo, bench_hpo, bench_report, bench_stn_cost, common


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bound_is_the_arithmetic_of_the_cycle():
    assert bench_stn_cost.bound(2, 1) == pytest.approx(16 / 6)
    assert bench_stn_cost.bound(1, 0) == pytest.approx(2.0)  # weight steps only: twice a plain
    assert bench_stn_cost.delta_bound(5, 1) == pytest.approx(44 / 15)  # Delta-STN's preset
    assert bench_stn_cost.delta_bound(2, 1) > bench_stn_cost.bound(2, 1)


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
    delta = modes["delta-stn"]
    assert delta["cycle"] == "5+1" and delta["bound"] == pytest.approx(44 / 15)
    assert _positive(delta["over_stn"]) and isinstance(delta["within_target"], bool)
    assert delta["target"] > stn[{"cpu": "cpu_ratio", "wall": "ratio"}[stn["judged_on"]]]
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
    # the store is seeded: STN reaches every baseline's final loss in both seeds, after these
    # fractions of its epochs (a multiple of 1/8: 4 epochs, median of 2 seeds)
    head = res["stn_vs_baselines"]
    fractions = {"bo": 1.0, "grid": 0.875, "hyperband": 0.625, "random": 0.875}
    assert {b: h["epochs_fraction"] for b, h in head.items()} == fractions
    for h in head.values():
        assert h["seeds"] == 2 and h["reached"] == 2
        # an STN epoch is 0.13 s a step, a trial's 0.07 s: the seconds scale by 13/7
        assert h["seconds_fraction"] == pytest.approx(h["epochs_fraction"] * 13 / 7)
    assert all(p[0] > 0 and p[1] > 0 for p in res["curves"]["stn"]["0"])


def test_hpo_headline_on_hand_made_curves():
    """STN's compute to reach each baseline's final loss (at or below), over the baseline's."""
    stn = {"points": [(1.0, 3.0, 0.9), (2.0, 6.0, 0.6), (4.0, 12.0, 0.45)], "final": 0.45,
           "epochs": 4.0, "seconds": 12.0}  # fmt: skip
    base = lambda final: {"points": [], "final": final, "epochs": 8.0, "seconds": 16.0}  # noqa: E731
    c = {
        "grid": {0: base(0.6), 1: base(0.2), 2: base(0.45), 3: base(0.1), 4: base(None)},
        "stn": {0: stn, 1: stn, 2: stn, 4: stn},  # no seed 3: not counted
        "delta-stn": {0: stn},  # a single run, never a baseline
    }
    # seed 0 reached at epoch 2 (= its loss), seed 1 never, seed 2 at epoch 4; seed 4 has no final
    assert bench_hpo.headline(c) == {
        "grid": {
            "seeds": 3,
            "reached": 2,
            "epochs_fraction": (2 / 8 + 4 / 8) / 2,
            "seconds_fraction": (6 / 16 + 12 / 16) / 2,
        }
    }
    assert bench_hpo.headline(c, "delta-stn")["grid"] == {
        "seeds": 1, "reached": 1, "epochs_fraction": 2 / 8, "seconds_fraction": 6 / 16}  # fmt: skip
    c["stn"] = {k: {**stn, "points": []} for k in c["stn"]}  # never reaches anything
    assert bench_hpo.headline(c)["grid"] == {
        "seeds": 3, "reached": 0, "epochs_fraction": None, "seconds_fraction": None}  # fmt: skip


def test_renderers_of_augment_and_bo_live_in_their_modules():
    aug = {"batched_ms": 1.0, "per_image_ms": 8.0, "batched_images_per_s": 128000.0,
           "per_image_images_per_s": 16000.0, "batched_cpu_ms": 1.0, "per_image_cpu_ms": 8.0,
           "ratio": 8.0, "cpu_ratio": 8.0, "target_ratio": 5.0, "meets_target": True,
           "threads": 1, "repeats": 5}  # fmt: skip
    lines = bench_main.RENDERERS["augment"](aug)
    assert lines == bench_augment.render(aug)
    assert lines[-1].endswith("target >= 5x: met (1 thread, median of 5).")
    bo = {
        "target_ask_seconds": 1.0,
        "ask_seconds_100obs_15d": 0.2,
        "tpe_ask_seconds_100obs_15d": 0.01,
        "ask_seconds_100obs_15d_default_threads": 0.3,
    }
    lines = bench_main.RENDERERS["bo"](bo)
    assert lines == bench_bo.render(bo) and "BO 0.2 s (one thread" in lines[0]
    assert bench_main.RENDERERS["bo"]({"error": "boom"}) == ["Failed: boom"]


def test_run_checked_reports_the_end_of_stderr():
    assert common.run_checked([sys.executable, "-c", "print(7)"], "seven").stdout == "7\n"
    code = "import sys; sys.stderr.write('x' * 900 + 'the cause'); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"^the child failed: x+the cause$") as e:
        common.run_checked([sys.executable, "-c", code], "the child")
    assert len(str(e.value)) == len("the child failed: ") + 800


@pytest.mark.slow  # builds a report in a real CLI process
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
    assert "valid: stn_cost, augment, bo, searchers, hpo, report" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_bench_runs_both_launch_ways_to_the_same_results():
    from benchmarks import bench_demo

    r = bench_demo.run(quick=True, methods=("stn", "random"))
    assert r["same_results"] and set(r["pool"]["val_loss"]) == {"stn/0", "random/0"}
    assert r["within_target"] is None  # judged on the whole demo only
    assert r["fresh"]["processes"] == 2 and r["pool"]["processes"] <= 2  # jobs; workers
    assert 0 < r["pool"]["startup_share"] <= 1 and r["import_cpu_s"] > 0
    text = "\n".join(bench_demo.render(r))
    assert "warm workers" in text and "same selected results: yes" in text
