"""compare_mnist with tiny settings: files, keys, sane values, caching; and its helpers."""

import json
import os
import warnings

import numpy as np
import pytest
import torch

from otgen.compare import GaussianCodeGenerator, compare_mnist, load_or_fit, standardize_codes

TINY = dict(n_train=600, latent_dim=4, ae_epochs=3, clf_epochs=6, n_samples=120, diffusion_steps=200, ot_tol=0.2,
            ot_max_iter=8, ddpm_steps=50, ddim_steps=10, device="cpu", verbose=False)
ROWS = ("OT (extended)", "OT (plain)", "DDPM", "DDIM", "Gaussian", "real digits", "AE reconstructions",
        "uniform noise")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cmp")
    cache = out / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the tiny OT solve may stop before its tolerance
        first = compare_mnist(out / "a", cache_dir=cache, **TINY)
        second = compare_mnist(out / "b", cache_dir=cache, **TINY)
    return first, second


def test_writes_report_and_metrics(runs):
    first, _ = runs
    paths = first["paths"]
    for key in ("report", "metrics", "samples", "mode_mixture", "diffusion_loss"):
        assert os.path.getsize(paths[key]) > 0
    with open(paths["metrics"]) as f:
        m = json.load(f)
    assert set(m["rows"]) == set(ROWS)
    for key in ("settings", "classifier_test_accuracy", "ae_test_mse", "ot", "diffusion", "timings", "cache_hits"):
        assert key in m
    report = open(paths["report"]).read()
    assert "| generator |" in report
    for name in ROWS:
        assert f"| {name} |" in report


def test_values_are_sane(runs):
    m, _ = runs
    for name, r in m["rows"].items():
        assert set(r["mode_mixture"]) == {"0.1", "0.2", "0.3", "0.4"}
        rates = list(r["mode_mixture"].values())
        assert all(0 <= v <= 1 for v in rates)
        assert rates == sorted(rates, reverse=True), name        # fewer ambiguous samples at a higher tau
        for key in ("low_confidence", "precision", "recall", "coverage", "copy_rate"):
            assert 0 <= r[key] <= 1, (name, key)
        assert r["fid"] >= 0 and r["sw_latent"] >= 0 and r["class_kl"] >= 0
        assert abs(sum(r["class_histogram"]) - 1) < 1e-9
    rows = m["rows"]
    assert 0.5 < m["classifier_test_accuracy"] <= 1
    # the real-digit floor beats pixel noise on every fidelity score
    assert rows["real digits"]["fid"] < rows["uniform noise"]["fid"]
    assert rows["real digits"]["precision"] > rows["uniform noise"]["precision"]
    assert rows["real digits"]["sw_latent"] < rows["uniform noise"]["sw_latent"]
    # plain OT outputs training codes only; real digits are training codes
    assert rows["OT (plain)"]["copy_rate"] == 1.0
    assert rows["real digits"]["copy_rate"] == 1.0
    assert rows["Gaussian"]["copy_rate"] < 0.05
    for name in ("OT (extended)", "OT (plain)", "DDPM", "DDIM", "Gaussian"):
        assert rows[name]["samples_per_s"] > 0
    assert 0 <= rows["OT (extended)"]["near_singular_fraction"] <= 1


def test_second_call_reuses_the_cache(runs):
    first, second = runs
    assert not any(first["cache_hits"].values())
    assert second["all_cached"] and all(second["cache_hits"].values())
    assert set(second["cache_hits"]) == {"autoencoder", "classifier", "ot", "diffusion"}
    # the same artifacts and seeds give the same samples
    for name in ("OT (plain)", "OT (extended)", "DDIM", "real digits"):
        assert first["rows"][name]["mode_mixture"] == second["rows"][name]["mode_mixture"]
        assert first["rows"][name]["fid"] == pytest.approx(second["rows"][name]["fid"])


def test_quantile_threshold_and_facet_rule_change_only_the_extended_ot_row(runs):
    first, _ = runs
    out = os.path.dirname(os.path.dirname(first["paths"]["report"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = compare_mnist(os.path.join(out, "c"), cache_dir=os.path.join(out, "cache"), angle_quantile=0.7,
                              mode_rule="facet", **TINY)
    assert third["all_cached"]
    assert first["ot"]["angle_rule"] == "gap" and first["ot"]["mode_rule"] == "component"
    assert third["ot"]["angle_rule"] == "quantile 0.7" and third["ot"]["mode_rule"] == "facet"
    assert third["ot"]["n_singular_pairs"] == pytest.approx(0.3 * third["ot"]["n_pairs"], rel=0.05)
    assert third["settings"]["angle_quantile"] == 0.7
    for name in ("OT (plain)", "DDIM", "real digits"):
        assert third["rows"][name]["mode_mixture"] == first["rows"][name]["mode_mixture"]
    report = open(third["paths"]["report"]).read()
    assert "rule quantile 0.7" in report and "standard error" in report


@pytest.mark.parametrize("kw, exc", [
    (dict(n_samples=5), ValueError),            # must exceed k = 5
    (dict(latent_dim=0), ValueError),
    (dict(ae_epochs=1.5), TypeError),
    (dict(taus=(0.2, 1.5)), ValueError),
    (dict(verbose="yes"), TypeError),
    (dict(cache_dir=3), TypeError),
    (dict(seed=-1), ValueError),
    (dict(angle_quantile=1.5), ValueError),
    (dict(mode_rule="simplex"), ValueError),
])
def test_validation(tmp_path, kw, exc):
    with pytest.raises(exc):
        compare_mnist(tmp_path, **kw)


def test_out_dir_must_be_a_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="folder"):
        compare_mnist(f)


def test_load_or_fit_caches_by_settings(tmp_path):
    calls = []

    def fit():
        calls.append(1)
        return {"v": len(calls)}

    save = lambda o, p: torch.save(o, p)
    load = lambda p: torch.load(p)
    a, hit_a, _ = load_or_fit(tmp_path, "thing", {"x": 1}, fit, save, load)
    b, hit_b, _ = load_or_fit(tmp_path, "thing", {"x": 1}, fit, save, load)
    c, hit_c, _ = load_or_fit(tmp_path, "thing", {"x": 2}, fit, save, load)
    d, hit_d, _ = load_or_fit(None, "thing", {"x": 1}, fit, save, load)
    assert (hit_a, hit_b, hit_c, hit_d) == (False, True, False, False)
    assert a == b == {"v": 1} and c == {"v": 2} and d == {"v": 3}


def test_standardize_codes_round_trip(rng):
    y = rng.normal(3.0, [1.0, 5.0, 0.1], size=(500, 3))
    z, m, s = standardize_codes(y)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(z * s + m, y, rtol=1e-5, atol=1e-5)
    z2, _, _ = standardize_codes(y[:10], m, s)
    np.testing.assert_allclose(z2, z[:10], atol=1e-6)
    with pytest.raises(ValueError):
        standardize_codes(np.array([1.0, np.nan]))


def test_gaussian_generator_matches_moments(rng):
    A = np.array([[2.0, 0.0], [1.0, 0.5]])
    y = rng.normal(size=(4000, 2)) @ A.T + np.array([1.0, -2.0])
    g = GaussianCodeGenerator(y, seed=0)
    pts, info = g.sample(20000)
    p = pts.numpy().astype(np.float64)
    np.testing.assert_allclose(p.mean(0), y.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(p, rowvar=False), np.cov(y, rowvar=False), atol=0.08)
    assert torch.equal(g.sample(5, seed=3)[0], g.sample(5, seed=3)[0])
    with pytest.raises(ValueError):
        GaussianCodeGenerator(np.ones(4))


def test_cli_passes_the_detector_options(monkeypatch):
    import otgen.compare
    from otgen.cli import main

    seen = {}
    monkeypatch.setattr(otgen.compare, "compare_mnist", lambda out_dir, **kw: seen.update(kw) or {"ok": True})
    assert main(["compare", "mnist", "--quiet"]) == 0
    assert seen["angle_quantile"] is None and seen["mode_rule"] == "component"
    assert main(["compare", "mnist", "--quiet", "--angle-quantile", "0.7", "--mode-rule", "facet"]) == 0
    assert seen["angle_quantile"] == 0.7 and seen["mode_rule"] == "facet"
