"""The video experiment with tiny settings: files, keys, sane values, caching, settings checks, instruments."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from otgen.experiments import video
from otgen.experiments.video import DATASETS, VideoSettings, plausibility, video_data

TINY = dict(n_train=240, n_test=60, ae_epochs=2, diffusion_steps=20, dit_steps=10, n_samples=24, ddpm_steps=10,
            ddim_steps=4, ot_tol=0.3, ot_max_iter=5, n_long=4, n_critical=12,
            critical_batch=4096)
GEN_ROWS = video.GENERATORS + video.FLOORS + (video.PCA_FLOOR,)


def _run(out, cache, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the tiny OT solve stops before its tolerance
        return video.run(VideoSettings(**dict(TINY, **kw)), out, cache_dir=cache, device="cpu")


@pytest.fixture(scope="module")
def bistable_runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("video")
    return _run(out / "a", out / "cache"), _run(out / "b", out / "cache")


def test_bistable_writes_report_and_metrics(bistable_runs):
    first, _ = bistable_runs
    with open(first.paths["metrics"]) as f:
        m = json.load(f)
    for key in ("settings", "rows", "data", "ae", "ot", "detector", "diffusion", "detection", "localisation",
                "critical", "timings", "cache_hits", "all_cached"):
        assert key in m, key
    assert set(GEN_ROWS) <= set(m["rows"])
    report = open(first.paths["report"]).read()
    for text in ("| generator |", "## Detection", "## Localisation", "## Critical-state generation", "## Discussion",
                 "standard error"):
        assert text in report
    for name in GEN_ROWS:
        assert f"| {name} |" in report


def test_bistable_values_are_sane(bistable_runs):
    m = bistable_runs[0].metrics
    rates = ("steady_rate", "transition_rate", "teleport_rate", "blend_rate", "empty_rate", "barrier_rate")
    for name, r in m["rows"].items():
        assert sum(r[k] for k in rates) == pytest.approx(1.0), name      # every clip gets exactly one class
        assert r["implausible_rate"] == pytest.approx(r["teleport_rate"] + r["blend_rate"] + r["empty_rate"]
                                                      + r["barrier_rate"])
        assert 0 <= r["copy_rate"] <= 1 and r["sw_latent"] >= 0 and r["implausible_se"] >= 0
    rows = m["rows"]
    assert rows["real clips (held-out)"]["implausible_rate"] == 0.0
    assert rows["OT (plain)"]["copy_rate"] == 1.0
    for name in video.GENERATORS:
        assert rows[name]["samples_per_s"] > 0
    d = m["detection"]["primary"]
    assert d["n"] == TINY["n_test"] and 0 <= d["true_positives"] <= min(d["flagged"], d["positives"])
    assert m["detection"]["rule"] == "minor-mode" and set(m["detection"]["rules"]) == set(video.DETECT_RULES)
    loc = m["localisation"]
    assert loc["n_clips"] == TINY["n_long"] and loc["window"] == 16 and 0 <= loc["within_tol"] <= loc["located"] <= 1
    c = m["critical"]
    assert 0 <= c["n_points"] <= TINY["n_critical"] and 0 <= c["flagged_fraction"] <= 1
    assert m["settings"]["angle_threshold"] == "persistence" and m["detector"]["n_components"] >= 1
    assert 0 < m["data"]["train_transition_rate"] < 0.2
    assert m["diffusion"]["DiT"]["n_steps"] == TINY["dit_steps"] and m["ae"]["latent_dim"] == 512
    assert m["ae"]["latent_shape"] == [8, 1, 8, 8]
    curve = m["diffusion"]["DiT"]["loss_curve"]
    assert curve["step"][-1] == TINY["dit_steps"] and len(curve["loss"]) == len(curve["step"])
    assert m["ot"]["n_targets"] <= TINY["n_train"]


def test_headline_blocks(bistable_runs):
    """metrics.json's documented schema: floors, generators, latent, differences, from the rows."""
    m = bistable_runs[0].metrics
    rows = m["rows"]
    assert m["floors"]["real"]["implausible"] == rows["real clips (held-out)"]["implausible_rate"]
    rec = m["floors"]["reconstruction"]["implausible"]
    assert rec == rows["AE reconstructions"]["implausible_rate"]
    assert m["floors"]["pca_reconstruction"]["dim"] == video.PCA_DIM and "old_reconstruction" not in m["floors"]
    assert set(m["generators"]) == {"ot_plain", "ot_extended", "dit_ddpm", "dit_ddim", "mlp_ddpm"}
    for name, key in video.GENERATOR_KEYS.items():
        g = m["generators"][key]
        assert g["implausible"] == rows[name]["implausible_rate"] and g["implausible_se"] >= 0
        assert g["excess"] == pytest.approx(g["implausible"] - rec) and g["samples_per_s"] > 0
        assert 0 <= g["between_modes"] <= 1
    d = m["differences"]["ot_plain - dit_ddpm"]
    assert d["difference"] == pytest.approx(rows["OT (plain)"]["implausible_rate"] - rows["DiT DDPM"]["implausible_rate"])
    assert d["se"] >= 0
    lat = m["latent"]
    assert lat["label"] == "state" and 0 <= lat["knn_agreement"] <= 1 and -1 <= lat["mode_ari"] <= 1
    assert 0 <= lat["mode_nmi"] <= 1 and lat["n_components"] >= lat["n_modes"] >= 1
    assert "OT − DiT" in open(bistable_runs[0].paths["report"]).read()


def test_second_call_reuses_the_cache(bistable_runs):
    first, second = bistable_runs
    assert not any(first.metrics["cache_hits"].values())
    assert second.metrics["all_cached"]
    assert set(second.metrics["cache_hits"]) == {"video-grid-autoencoder", "video-ot", "video-dit", "video-mlp"}
    for name in ("OT (plain)", "OT (extended)", "DiT DDIM", "real clips (held-out)"):
        assert first.metrics["rows"][name]["implausible_rate"] == second.metrics["rows"][name]["implausible_rate"]
    assert first.metrics["localisation"]["within_tol"] == second.metrics["localisation"]["within_tol"]


@pytest.mark.parametrize("ds, key, rule", [("permanence", "changed_rate", dict(angle_quantile=0.7, blend_rule="facet")),
                                           ("moving-digits", "mass_change_rate", {})])
def test_other_datasets(tmp_path, ds, key, rule):
    torch.set_num_threads(1)
    m = _run(tmp_path / ds, tmp_path / "cache", dataset=ds, n_train=120, n_test=30, ae_epochs=1, n_samples=16,
             old_floor="yes" if rule else "no", **rule).metrics
    if rule:
        assert m["detector"]["blend_rule"] == "facet" and m["detector"]["rule"] == "quantile 0.7"
        assert 0.2 <= m["detector"]["n_singular_pairs"] / m["detector"]["n_pairs"] <= 0.4
    assert "detection" not in m and "localisation" not in m and "critical" not in m
    assert m["ae"]["latent_dim"] == VideoSettings(dataset=ds).code_dim()
    assert set(m["rows"]) == set(GEN_ROWS) | ({video.OLD_FLOOR} if rule else set())
    if rule:      # permanence: the old latent's floor on the same clips, the modes against the object count
        assert m["floors"]["old_reconstruction"]["implausible"] == m["rows"][video.OLD_FLOOR]["implausible_rate"]
        assert m["ae"]["old_test_mse"] > 0 and m["latent"]["label"] == "n_objects"
    else:
        assert m["latent"] is None
    for r in m["rows"].values():
        assert 0 <= r[key] <= 1 and 0 <= r["implausible_rate"] <= 1
    assert m["rows"]["real clips (held-out)"]["implausible_rate"] == 0.0


@pytest.mark.parametrize("kw, exc, match", [
    (dict(dataset="cartpole"), ValueError, "dataset"),
    (dict(n_samples=1), ValueError, "n_samples"),
    (dict(n_train=5), ValueError, "n_train"),
    (dict(ae_epochs=1.5), TypeError, "ae_epochs"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(angle_threshold="steep"), ValueError, "angle_threshold"),
    (dict(angle_quantile=1.5), ValueError, "angle_quantile"),
    (dict(angle_quantile=True), ValueError, "angle_quantile"),
    (dict(blend_rule="nearest"), ValueError, "blend_rule"),
    (dict(angle_threshold=0.4, angle_quantile=0.7), ValueError, "not both"),
    (dict(detect_rule="any"), ValueError, "detect_rule"),
    (dict(long_frames=16), ValueError, "long_frames"),
    (dict(dataset="permanence", ae_extra=10), ValueError, "ae_extra"),
    (dict(min_size=0.6), ValueError, "min_size"),
    (dict(dit_steps=0), ValueError, "dit_steps"),
    (dict(old_floor=True), ValueError, "old_floor"),
])
def test_settings_are_checked_when_made(kw, exc, match):
    with pytest.raises(exc, match=match):
        VideoSettings(**kw)


def test_per_dataset_defaults():
    s = VideoSettings(dataset="permanence")
    assert s.epochs() == 10 and s.ae_config()["channels"] == 1 and s.extra() == 0
    assert s.old_ae_config()["latent_tokens"] == 8 and s.old_ae_config()["epochs"] == 48
    assert dataclasses.replace(s, ae_epochs=3).old_ae_config()["epochs"] == 3
    b = VideoSettings()
    assert b.epochs() == 8 and b.extra() == b.n_train // 4 and dataclasses.replace(b, ae_extra=0).extra() == 0
    m = VideoSettings(dataset="moving-digits")         # the wider, longer-trained grid autoencoder (floor 1.5 %)
    assert (m.epochs(), m.ae_config()["width"]) == (30, 64) and s.ae_config()["width"] == b.ae_config()["width"] == 32
    assert dataclasses.replace(m, ae_epochs=3).ae_config()["epochs"] == 3


def test_mlp_denoiser_is_as_wide_as_the_code():
    """The MLP DDPM's noise prediction must not pass a layer narrower than the code (the 128-wide default on the
    512-number grid left 384 noise directions unpredictable: loss 0.78, every sample decoded to noise)."""
    for ds, channels in zip(DATASETS, (1, 2, 4)):
        s = VideoSettings(dataset=ds, grid_channels=channels)
        assert s.ae_config()["channels"] == channels
        assert s.code_dim() == 512 * channels == channels * int(np.prod([8, 8, 8]))
        assert s.mlp_config()["hidden"] >= s.code_dim()
        assert s.dit_config()["hidden"] >= channels * int(np.prod(video.DIT_PATCH))   # one token's numbers
    assert VideoSettings().code_dim() == 512 and VideoSettings().dit_config() == video.DIT_DEFAULTS


def test_instruments_on_real_clips():
    for ds in DATASETS:
        clips, labels, label = video_data(ds, 40, seed=3, split="test")
        assert clips.shape == (40, 16, 1, 32, 32) and label.shape == (40,)
        p = plausibility(ds, clips)
        assert p["implausible_rate"] == 0.0 and p["implausible"].shape == (40,) and not p["implausible"].any(), ds
    clips, labels, _ = video_data("bistable", 200, seed=0)
    assert plausibility("bistable", clips)["transition_rate"] == pytest.approx((labels["state"] == 2).mean())


def test_pca_codes_project_onto_the_leading_axes():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 3)) @ np.diag([5.0, 1.0, 0.0]) + 2.0          # a plane in 3-d
    assert np.allclose(video.pca_codes(train, train, 2), train, atol=1e-4)       # exact on the plane
    one = video.pca_codes(train, train, 1)
    assert np.allclose(one[:, 2], 2.0, atol=1e-4) and np.abs(one - train).max() > 0.1


def test_loss_curve_averages_windows():
    c = video.loss_curve(np.arange(100.0), n_points=4)
    assert c["step"] == [25, 50, 75, 100] and c["loss"] == [12.0, 37.0, 62.0, 87.0]
    assert video.loss_curve([1.0, 2.0], n_points=20)["step"] == [1, 2]
