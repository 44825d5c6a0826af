"""compare_video with tiny settings: files, keys, sane values, caching, errors; and its instruments."""

import json
import math
import os
import warnings

import pytest
import torch

from otgen.compare_video import (DATASETS, compare_video, detection_scores, digit_plausibility, plausibility,
                                 video_data)

TINY = dict(n_train=240, n_test=60, ae_epochs=2, diffusion_steps=60, dit_steps=30, n_samples=24, ddpm_steps=10,
            ddim_steps=4, ot_tol=0.3, ot_max_iter=5, n_long=4, n_critical=12, device="cpu", verbose=False)
GEN_ROWS = ("OT (extended)", "OT (plain)", "DiT DDPM", "DiT DDIM", "MLP DDPM", "real clips (held-out)",
            "AE reconstructions")


def _run(ds, out, cache, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the tiny OT solve stops before its tolerance
        return compare_video(ds, out, cache_dir=cache, **dict(TINY, **kw))


@pytest.fixture(scope="module")
def bistable_runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cmpv")
    first = _run("bistable", out / "a", out / "cache")
    second = _run("bistable", out / "b", out / "cache")
    return first, second


def test_bistable_writes_report_metrics_and_figures(bistable_runs):
    first, _ = bistable_runs
    paths = first["paths"]
    for key in ("report", "metrics", "filmstrips", "latent_map", "diffusion_loss"):
        assert os.path.getsize(paths[key]) > 0, key
    assert open(paths["filmstrips"], "rb").read(4) == b"\x89PNG"
    with open(paths["metrics"]) as f:
        m = json.load(f)
    for key in ("settings", "rows", "data", "ae", "ot", "detector", "diffusion", "detection", "localisation",
                "critical", "timings", "cache_hits", "all_cached"):
        assert key in m, key
    assert set(GEN_ROWS) <= set(m["rows"])
    report = open(paths["report"]).read()
    for text in ("| generator |", "## Detection", "## Localisation", "## Critical-state generation", "## Discussion"):
        assert text in report
    for name in GEN_ROWS:
        assert f"| {name} |" in report
    with open(paths["latent_map"][:-4] + ".json") as f:
        lm = json.load(f)
    assert len(lm["paths"]) >= 1


def test_bistable_values_are_sane(bistable_runs):
    m, _ = bistable_runs
    rates = ("steady_rate", "transition_rate", "teleport_rate", "blend_rate", "empty_rate", "barrier_rate")
    for name, r in m["rows"].items():
        assert sum(r[k] for k in rates) == pytest.approx(1.0), name      # every clip gets exactly one class
        assert r["implausible_rate"] == pytest.approx(r["teleport_rate"] + r["blend_rate"] + r["empty_rate"]
                                                      + r["barrier_rate"])
        assert 0 <= r["copy_rate"] <= 1 and r["sw_latent"] >= 0
    rows = m["rows"]
    assert rows["real clips (held-out)"]["implausible_rate"] == 0.0    # the instrument reads real clips correctly
    assert rows["OT (plain)"]["copy_rate"] == 1.0                      # plain OT outputs training codes
    for name in ("OT (extended)", "OT (plain)", "DiT DDPM", "DiT DDIM", "MLP DDPM"):
        assert rows[name]["samples_per_s"] > 0
    d = m["detection"]["primary"]
    assert d["n"] == TINY["n_test"] and 0 <= d["true_positives"] <= min(d["flagged"], d["positives"])
    assert m["detection"]["rule"] == "minor-mode" and set(m["detection"]["rules"]) == {"minor-mode", "fraction",
                                                                                          "incident"}
    loc = m["localisation"]
    assert loc["n_clips"] == TINY["n_long"] and loc["window"] == 16 and 0 <= loc["within_tol"] <= loc["located"] <= 1
    c = m["critical"]
    assert 0 <= c["n_points"] <= TINY["n_critical"] and 0 <= c["flagged_fraction"] <= 1
    assert m["settings"]["angle_threshold"] == "persistence" and m["detector"]["n_components"] >= 1
    assert m["settings"]["ae_extra"] == TINY["n_train"] // 4
    assert 0 < m["data"]["train_transition_rate"] < 0.2
    assert m["settings"]["dit_steps"] == 30 and m["diffusion"]["DiT"]["n_steps"] == 30
    assert m["ae"]["latent_dim"] == 16 and m["ot"]["n_targets"] <= TINY["n_train"]


def test_second_call_reuses_the_cache(bistable_runs):
    first, second = bistable_runs
    assert not any(first["cache_hits"].values())
    assert second["all_cached"] and set(second["cache_hits"]) == {"autoencoder", "ot", "dit", "mlp"}
    for name in ("OT (plain)", "OT (extended)", "DiT DDIM", "real clips (held-out)"):
        assert first["rows"][name]["implausible_rate"] == second["rows"][name]["implausible_rate"]
        assert first["rows"][name]["sw_latent"] == pytest.approx(second["rows"][name]["sw_latent"])
    assert first["localisation"]["within_tol"] == second["localisation"]["within_tol"]


@pytest.mark.parametrize("ds, key, rule", [("permanence", "changed_rate", dict(angle_quantile=0.7, mode_rule="facet")),
                                           ("moving-digits", "mass_change_rate", {})])
def test_other_datasets(tmp_path, ds, key, rule):
    torch.set_num_threads(1)
    m = _run(ds, tmp_path / ds, tmp_path / "cache", n_train=120, n_test=30, ae_epochs=1, n_samples=16, **rule)
    if rule:       # the AE-OT facet rule at an angle quantile: recorded, and a fraction 0.3 of the pairs singular
        assert m["settings"]["mode_rule"] == "facet" and m["detector"]["mode_rule"] == "facet"
        assert m["detector"]["angle_threshold"] == "quantile 0.7"
        assert 0.2 <= m["detector"]["n_singular_pairs"] / m["detector"]["n_pairs"] <= 0.4
    assert "detection" not in m and "localisation" not in m and "critical" not in m
    assert set(m["rows"]) == set(GEN_ROWS)
    for r in m["rows"].values():
        assert 0 <= r[key] <= 1 and 0 <= r["implausible_rate"] <= 1
    assert m["rows"]["real clips (held-out)"]["implausible_rate"] == 0.0
    if ds == "permanence":
        real = m["rows"]["real clips (held-out)"]
        assert real["count_3"] + real["count_4"] == pytest.approx(1.0)
    report = open(m["paths"]["report"]).read()
    assert "| generator |" in report and "## Detection" not in report


@pytest.mark.parametrize("kw, exc, match", [
    (dict(dataset="cartpole"), ValueError, "dataset"),
    (dict(n_samples=1), ValueError, "n_samples"),
    (dict(n_train=5), ValueError, "n_train"),
    (dict(ae_epochs=1.5), TypeError, "ae_epochs"),
    (dict(verbose="yes"), TypeError, "verbose"),
    (dict(cache_dir=3), TypeError, "cache_dir"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(angle_threshold="steep"), ValueError, "angle_threshold"),
    (dict(angle_quantile=1.5), ValueError, "angle_quantile"),
    (dict(angle_quantile=True), ValueError, "angle_quantile"),
    (dict(mode_rule="nearest"), ValueError, "mode_rule"),
    (dict(angle_threshold=0.4, angle_quantile=0.7), ValueError, "not both"),
    (dict(detect_rule="any"), ValueError, "detect_rule"),
    (dict(ae_kwargs=[1]), TypeError, "ae_kwargs"),
    (dict(long_frames=16), ValueError, "long_frames"),
    (dict(dataset="permanence", ae_extra=10), ValueError, "ae_extra"),
    (dict(min_size=0.6), ValueError, "min_size"),
    (dict(dit_steps=0), ValueError, "dit_steps"),
])
def test_validation(tmp_path, kw, exc, match):
    kw = dict(kw)
    ds = kw.pop("dataset", "bistable")
    with pytest.raises(exc, match=match):
        compare_video(ds, tmp_path / "out", **kw)
    assert not os.path.exists(tmp_path / "out")                  # nothing is created for bad arguments


def test_out_must_be_a_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="folder"):
        compare_video("bistable", f)


def test_instruments_on_real_clips():
    for ds in DATASETS:
        clips, labels, label = video_data(ds, 40, seed=3, split="test")
        assert clips.shape == (40, 16, 1, 32, 32) and label.shape == (40,)
        r = plausibility(ds, clips)
        assert r["implausible_rate"] == 0.0, ds
    clips, labels, _ = video_data("bistable", 200, seed=0)
    r = plausibility("bistable", clips)
    assert r["transition_rate"] == pytest.approx((labels["state"] == 2).mean())


def test_digit_plausibility_catches_fades_and_jumps():
    clips, _, _ = video_data("moving-digits", 6, seed=0)
    x = clips.clone()
    x[0, 8:] *= 0.5                                  # the digit loses half its ink
    x[1, 8:] = torch.roll(x[1, 8:], shifts=12, dims=-1)   # jumps 12 px sideways
    x[2, 5] = 0                                      # a frame with no digit
    r = digit_plausibility(x)
    assert list(r["mass_change"][:4]) == [True, False, True, False]
    assert r["jump"][1] and not r["jump"][3]
    assert r["empty"][2] and not r["empty"][0]
    assert r["implausible_rate"] == pytest.approx(3 / 6)


def test_detection_scores():
    s = detection_scores([True, True, False, False, True], [True, False, False, True, True])
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["flagged"] == 3 and s["positives"] == 3
    s = detection_scores([False, False], [True, False])
    assert math.isnan(s["precision"]) and s["recall"] == 0.0 and s["f1"] == 0.0
    with pytest.raises(ValueError):
        detection_scores([True], [True, False])


def test_cli_compare_mnist_keeps_its_defaults(tmp_path, monkeypatch):
    """`otgen compare mnist` passes the same settings as before the video command was added."""
    import otgen.compare
    from otgen.cli import main

    seen = {}

    def fake(out_dir, **kw):
        seen.update(kw, out_dir=out_dir)
        return {"ok": True}

    monkeypatch.setattr(otgen.compare, "compare_mnist", fake)
    assert main(["compare", "mnist", "--quiet"]) == 0
    assert seen["out_dir"] == "otgen-out/compare-mnist"
    assert (seen["ae_epochs"], seen["n_samples"], seen["diffusion_steps"], seen["ot_tol"], seen["n_train"],
            seen["latent_dim"], seen["clf_epochs"]) == (20, 1000, 10000, 0.03, None, 8, 20)
    assert main(["compare", "mnist", "--quiet", "--n-samples", "50", "--out", str(tmp_path)]) == 0
    assert seen["n_samples"] == 50 and seen["out_dir"] == str(tmp_path)


def test_cli_compare_video_defaults(monkeypatch):
    import otgen.compare_video
    from otgen.cli import main

    seen = {}

    def fake(dataset, out, **kw):
        seen.update(kw, dataset=dataset, out=out)
        return {"ok": True}

    monkeypatch.setattr(otgen.compare_video, "compare_video", fake)
    assert main(["compare", "video", "--quiet"]) == 0
    assert seen["dataset"] == "bistable" and seen["out"] == "otgen-out/compare-video-bistable"
    assert (seen["n_train"], seen["ae_epochs"], seen["n_samples"], seen["diffusion_steps"], seen["dit_steps"],
            seen["angle_threshold"], seen["ae_extra"]) == (2000, None, 500, 10000, 4000, "persistence", None)
    from otgen.compare_video import AE_EPOCHS, ae_settings
    assert AE_EPOCHS["bistable"] == 24 and ae_settings("bistable")["latent_tokens"] == 4   # None: per dataset
    assert ae_settings("permanence", {"width": 32})["width"] == 32
    assert main(["compare", "video", "--dataset", "moving-digits", "--angle-threshold", "0.4", "--quiet"]) == 0
    assert seen["dataset"] == "moving-digits" and seen["angle_threshold"] == 0.4
    assert (seen["angle_quantile"], seen["mode_rule"]) == (None, "component")
    assert main(["compare", "video", "--angle-quantile", "0.7", "--mode-rule", "facet", "--quiet"]) == 0
    assert (seen["angle_quantile"], seen["mode_rule"]) == (0.7, "facet")
