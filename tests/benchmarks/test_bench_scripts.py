"""The benchmark scripts run end to end (``--quick``) and write the JSON and tables they promise.

The scripts run at the same time, each in its own subprocess, into ``tmp_path``. No timing
thresholds: only the presence of the keys and positive finite numbers are checked.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("bench_scaling.py", "bench_generation.py", "bench_hard_cases.py", "bench_video_grid.py", "bench_denormals.py")


def _positive(x, what):
    assert isinstance(x, (int, float)) and not isinstance(x, bool), f"{what}: {x!r} is not a number"
    assert math.isfinite(x) and x > 0, f"{what}: {x!r} is not a positive finite number"


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Run the scripts with --quick (in parallel) and return {script: output folder}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    outs, procs = {}, {}
    for script in SCRIPTS:
        outs[script] = tmp_path_factory.mktemp(script.replace(".py", ""))
        procs[script] = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / script), "--quick", "--device", "cpu",
             "--out", str(outs[script])],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for script, p in procs.items():
        log, _ = p.communicate(timeout=240)
        assert p.returncode == 0, f"{script} --quick failed:\n{log[-4000:]}"
    return outs


def test_scaling_quick(quick_runs):
    out = quick_runs["bench_scaling.py"]
    res = json.loads((out / "scaling.json").read_text())
    assert {"machine", "settings", "iteration", "tv", "tv_not_run"} <= set(res)
    assert res["iteration"] and res["tv"]
    for r in res["iteration"]:
        assert "error" not in r, r
        for key in ("N", "d", "M", "m_default", "iteration_s", "bare_gemm_s", "ratio", "argmax_pass_s",
                    "top2_pass_s", "top6_pass_s", "argmax_ratio", "top6_ratio", "gemm_gflops", "peak_rss_mb",
                    "rss_before_fit_mb", "default_m_iteration_lower_bound_s"):
            _positive(r[key], f"iteration[{key}]")
        assert r["M"] & (r["M"] - 1) == 0 and r["M"] <= r["m_default"]
        assert len(r["iteration_times_s"]) == r["iters"] >= 2
        for t in r["iteration_times_s"]:
            _positive(t, "iteration_times_s")
    for r in res["tv"]:
        assert "error" not in r, r
        for key in ("target_tv", "fit_wall_s", "tv", "eval_floor", "eval_noise", "eval_points", "final_M",
                    "iterations", "peak_rss_mb"):
            _positive(r[key], f"tv[{key}]")
        assert r["warm_start_s"] >= 0
        assert math.isclose(r["eval_floor"], 0.4 * math.sqrt(r["N"] / r["eval_points"]))
        if r["converged"]:
            _positive(r["time_to_target_s"], "time_to_target_s")
    table = (out / "scaling.md").read_text()
    assert "iteration / GEMM" in table and "measured TV" in table


def test_generation_quick(quick_runs):
    out = quick_runs["bench_generation.py"]
    res = json.loads((out / "generation.json").read_text())
    assert {"machine", "settings", "setup", "batches"} <= set(res)
    assert res["setup"]["latent_dim"] == 8
    assert res["settings"]["ddpm_steps"] == 1000 and res["settings"]["ddim_steps"] == 50
    for b in res["batches"]:
        gens = b["generators"]
        assert {"DDPM", "DDIM", "OT plain (OTGenerator, no extension)",
                "OT extended (piecewise-linear, k=3)"} <= set(gens)
        for name, g in gens.items():
            _positive(g["samples_per_s"], f"{name} samples_per_s")
            _positive(g["seconds_per_batch"], f"{name} seconds_per_batch")
        for name, r in b["ratios"].items():
            _positive(r["vs_ddpm"], f"{name} vs DDPM")
            _positive(r["vs_ddim"], f"{name} vs DDIM")
    table = (out / "generation.md").read_text()
    assert "OT / DDPM-1000" in table and "OT / DDIM-50" in table


def test_hard_cases_quick(quick_runs):
    out = quick_runs["bench_hard_cases.py"]
    res = json.loads((out / "hard_cases.json").read_text())
    assert {"machine", "settings", "cases"} <= set(res) and len(res["cases"]) == 3
    for r in res["cases"]:
        assert not r["stopped_at_budget"], r
        for key in ("fit_wall_s", "tv", "eval_floor", "eval_points", "iterations", "target_tv"):
            _positive(r[key], f"{r['case']}[{key}]")
        assert isinstance(r["converged"], bool)
    assert {r["case"]: r["method"] for r in res["cases"]}["ring-2d"] == "exact2d"
    assert "exact_tv" in next(r for r in res["cases"] if r["d"] == 2)
    assert (out / "hard_cases.md").read_text().count("\n| ") == 4      # header + 3 cases


def test_video_grid_quick(quick_runs):
    """One row per (dataset, channels), the PCA row only where it compresses, rates in [0, 1]."""
    res = json.loads((quick_runs["bench_video_grid.py"] / "video_grid.json").read_text())
    assert res["meta"]["quick"] and {(r["dataset"], r["channels"]) for r in res["results"]} == \
        {(d, c) for d in ("moving-digits", "permanence") for c in (1, 2, 4)}
    for r in res["results"]:
        assert r["code_dim"] == 512 * r["channels"] and r["rows"][0]["dim"] == r["code_dim"]
        assert [row["dim"] for row in r["rows"][1:]] == ([] if r["code_dim"] <= 512 or r["n_train"] <= 512 else [512])
        for row in r["rows"]:
            assert 0 <= row["implausible"] <= 1 and row["implausible_se"] >= 0
            _positive(row["mse"], "mse")
    assert "| moving-digits | 4 | 1 | 64 | grid (2048) | 2048 |" in \
        (quick_runs["bench_video_grid.py"] / "video_grid.md").read_text()


def test_denormals_quick(quick_runs):
    """Both models fitted in both modes; same seed and data, so the two final losses agree (float32 noise)."""
    res = json.loads((quick_runs["bench_denormals.py"] / "denormals_moving_digits.json").read_text())
    assert res["meta"]["quick"]
    rows = {(r["model"], r["mode"]): r for r in res["results"]}
    assert set(rows) == {(m, mode) for m in ("grid", "dit") for mode in ("flushed", "kept")}
    for r in rows.values():
        _positive(r["seconds"], "seconds")
        _positive(r["gemm_gflops"], "gemm_gflops")
    for m in ("grid", "dit"):
        assert rows[(m, "flushed")]["final_loss"] == pytest.approx(rows[(m, "kept")]["final_loss"], rel=1e-3)
    assert len(rows[("grid", "kept")]["epoch_seconds"]) == res["meta"]["epochs"]


def test_video_grid_sweep(tmp_path):
    """--epochs x --widths: one fit per pair, each with the asked training length and width."""
    _run([str(REPO / "benchmarks" / "bench_video_grid.py"), "--quick", "--datasets", "permanence", "--channels", "1",
          "--epochs", "1", "2", "--widths", "8", "16", "--name", "s"], tmp_path)
    res = json.loads((tmp_path / "s.json").read_text())
    assert [(r["epochs"], r["width"]) for r in res["results"]] == [(1, 8), (1, 16), (2, 8), (2, 16)]
    assert "| permanence | 1 | 2 | 16 | grid (512) | 512 |" in (tmp_path / "s.md").read_text()


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, *args, "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]


def test_schedule_variants_side_by_side(tmp_path):
    _run([str(REPO / "benchmarks" / "bench_schedule.py"), "--size", "300x4", "--tol", "0.1", "--eval-points",
          "65536", "--variants", "default", "band-0.05", "--name", "s"], tmp_path)
    res = json.loads((tmp_path / "s.json").read_text())
    assert [r["variant"] for r in res["runs"]] == ["default", "band-0.05"]
    for r in res["runs"]:
        for key in ("fit_s", "floor_s", "ratio", "points", "points_over_floor", "tv", "eval_floor", "iterations"):
            _positive(r[key], key)
        assert r["points"] == sum(e["n_samples"] for e in r["history"]) and len(r["history"]) == r["iterations"]
    assert res["runs"][1]["constants"] == {"_HESSIAN_BAND_FRACTION": 0.05}
    assert "| band-0.05 |" in (tmp_path / "s.md").read_text()


def test_floor_scoring_passes(tmp_path):
    _run([str(REPO / "benchmarks" / "bench_floor.py"), "--size", "1500x8", "--passes-only", "--pass-points", "4096",
          "--name", "p"], tmp_path)
    res = json.loads((tmp_path / "p.json").read_text())
    assert res["passes"]["top2_maxmask_equal"] is True
    assert set(res["passes"]["over_gemm"]) == {"gemm", "best", "topk2", "topk6", "top2_maxmask"}
    for k, v in res["passes"]["over_gemm"].items():
        _positive(v, k)


def test_separated_latent_cheaper_encoder(tmp_path):
    """--downsample 2 builds the 14 x 14 encoder and says so in its row; the agreements are shares in [0, 1]."""
    _run([str(REPO / "benchmarks" / "bench_separated_latent.py"), "--quick", "--downsample", "2", "--name", "q"],
         tmp_path)
    row = json.loads((tmp_path / "q.json").read_text())["rows"][0]
    assert row["input"] == 14 and row["width"] == 8
    assert all(0 <= row[k] <= 1 for k in row if k == "features" or k.startswith("embedding_"))
    assert "| 14 × 14 |" in (tmp_path / "q.md").read_text()


def test_fused_scoring_bench(tmp_path):
    """The fused-kernel bench: every pass timed at each thread count; no disagreement beyond rounding."""
    from otgen.transport._fused import library
    if library() is None:
        pytest.skip("fused kernel unavailable here")
    _run([str(REPO / "benchmarks" / "bench_fused_scoring.py"), "--sizes", "300x5", "--points", "2048", "--reps", "1",
          "--name", "f"], tmp_path)
    row = json.loads((tmp_path / "f.json").read_text())["rows"][0]
    assert (row["N"], row["d"], row["M"]) == (300, 5, 2048)
    ex = row["exactness"]
    assert ex["best_disagree_real"] == 0 and ex["top2_disagree_real"] == 0 and ex["top6_disagree_real"] == 0
    assert ex["fused_best_equals_fused_top2_first"] and ex["fused_best_equals_fused_top6_first"]
    for per in row["threads"].values():
        for k in ("gemm", "best", "topk2", "topk6", "fused_best", "fused_top2", "fused_top6"):
            _positive(per["seconds"][k], k)
    assert "| 300 × 5 |" in (tmp_path / "f.md").read_text()


def test_video_decoder_noise_bench(tmp_path):
    """One row per (dataset, sigma); every rate a share in [0, 1]; both DiT samplers and each tolerance offset."""
    _run([str(REPO / "benchmarks" / "bench_video_decoder_noise.py"), "--quick", "--datasets", "permanence",
          "--noise", "0", "0.5", "--tau", "0.2", "--name", "n"], tmp_path)
    res = json.loads((tmp_path / "n.json").read_text())
    assert [(r["dataset"], r["sigma"]) for r in res["rows"]] == [("permanence", 0.0), ("permanence", 0.5)]
    for r in res["rows"]:
        rates = [r["floor"], r["tolerance"]["0.2"], r["dit_ddim"], r["dit_ddpm"]]
        assert all(0 <= x["implausible"] <= 1 and x["implausible_se"] >= 0 for x in rates)
        assert 0 <= r["dit_ddim"]["off_support"] <= 1
        _positive(r["heldout_nn"], "heldout_nn")
        _positive(r["dit_ddpm"]["nn"], "nn")
    assert "| permanence | 0.5 |" in (tmp_path / "n.md").read_text()


def test_video_dit_bench(tmp_path):
    """One row per denoiser; restarts start at a sampler timestep at or below the asked one; rates are shares."""
    _run([str(REPO / "benchmarks" / "bench_video_dit.py"), "--quick", "--dataset", "permanence", "--name", "d"],
         tmp_path)
    res = json.loads((tmp_path / "d.json").read_text())
    assert [r["config"] for r in res["rows"]] == ["dit:4:32:1", "dit:2:32:1:1x2x2", "mlp:4:32:1"]
    for r in res["rows"]:
        rates = [r["samples"], *r["restarts"].values()]
        assert all(0 <= x["implausible"] <= 1 and x["implausible_se"] >= 0 for x in rates)
        assert all(x["t_used"] <= int(t) for t, x in r["restarts"].items())
        _positive(r["loss_last"], "loss_last")
    assert "| dit:4:32:1 |" in (tmp_path / "d.md").read_text()


@pytest.mark.parametrize("args, word", [(["--configs", "dit:3000:128"], "KIND:STEPS:WIDTH:DEPTH"),
                                        (["--configs", "mlp:10:8:1:2x2x2"], "for dit only"),
                                        (["--configs", "unet:10:8:1"], "KIND in"),
                                        (["--restart-t", "1000"], "restart timestep")])
def test_video_dit_bench_refuses_bad_settings_before_fitting(tmp_path, args, word):
    """A bad denoiser or timestep stops the script at once (exit 2) with what is wrong, before any training."""
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_video_dit.py"), *args, "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and word in p.stderr
    assert not list(tmp_path.iterdir())
