"""The MNIST experiment with tiny settings: stages, files, keys, sane values, caching, settings checks."""

import dataclasses
import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from otgen.experiments import mnist
from otgen.experiments.mnist import MNISTSettings
from otgen.figures.mnist_mode_mixture import comparison_figures

TINY = MNISTSettings(latent="ae", n_train=600, latent_dim=4, ae_epochs=3, clf_epochs=6, n_samples=120, diffusion_steps=200,
                     ot_tol=0.2, ot_max_iter=8, ddpm_steps=50, ddim_steps=10)
ROWS = {**mnist.GENERATORS, **mnist.FLOORS}


def _run(settings, out, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the tiny OT solve may stop before its tolerance
        return mnist.run(settings, out, cache_dir=cache, device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mnist")
    return _run(TINY, out / "a", out / "cache"), _run(TINY, out / "b", out / "cache")


def test_writes_report_and_metrics(runs):
    first, _ = runs
    with open(first.paths["metrics"]) as f:
        m = json.load(f)
    assert set(m["generators"]) == {"ot_extended", "ot_plain", "ddpm", "ddim", "dpm_solver", "gaussian"}
    assert set(m["floors"]) == {"real", "reconstruction", "real_heldout", "reconstruction_heldout", "noise"}
    for key in ("settings", "latent", "detectors", "classifier_test_accuracy", "ot", "diffusion", "timings",
                "cache_hits"):
        assert key in m
    for key in ("knn_agreement", "angle_auc", "n_modes", "mode_ari", "mode_nmi"):
        assert key in m["latent"]
    assert math.isfinite(m["environment"]["gemm_gflops"]) and m["environment"]["gemm_gflops"] > 0
    for r in list(m["generators"].values()) + list(m["floors"].values()):
        for key in ("mixed_rate", "mixed_rate_se", "excess_mixed_rate", "between_modes_rate", "off_support_rate",
                    "copies", "fid", "precision", "recall", "samples_per_s"):
            assert key in r
    report = open(first.paths["report"]).read()
    assert "| generator |" in report and "Does OT mix modes less than diffusion" in report
    for name in ROWS.values():
        assert f"| {name} |" in report


def test_values_are_sane(runs):
    m = runs[0].metrics
    rows = {**m["generators"], **m["floors"]}
    for name, r in rows.items():
        assert set(r["mixed_rate"]) == {"0.1", "0.2", "0.3", "0.4"} == set(r["mixed_rate_se"])
        rates = list(r["mixed_rate"].values())
        assert all(0 <= v <= 1 for v in rates)
        assert rates == sorted(rates, reverse=True), name        # fewer ambiguous samples at a higher tau
        for key in ("low_confidence", "copies", "between_modes_rate", "off_support_rate"):
            assert 0 <= r[key] <= 1, (name, key)
        assert r["sw_latent"] >= 0 and r["class_kl"] >= 0
        if name == "real_heldout":        # the reference set itself: no distribution metrics against it
            assert all(r[key] is None for key in mnist.REFERENCE_METRICS)
            continue
        assert all(0 <= r[key] <= 1 for key in ("precision", "recall", "coverage")), name
        assert r["fid"] >= 0
        assert abs(sum(r["class_histogram"]) - 1) < 1e-9
    assert rows["reconstruction"]["excess_mixed_rate"]["0.2"] == 0.0
    assert 0.5 < m["classifier_test_accuracy"] <= 1
    assert rows["real"]["fid"] < rows["noise"]["fid"]
    assert rows["real"]["precision"] > rows["noise"]["precision"]
    assert rows["real"]["sw_latent"] < rows["noise"]["sw_latent"]
    assert rows["real"]["off_support_rate"] < rows["noise"]["off_support_rate"]
    # plain OT outputs training codes only; real digits are training codes
    assert rows["ot_plain"]["copies"] == 1.0 and rows["real"]["copies"] == 1.0
    assert rows["real_heldout"]["copies"] < 1.0      # held-out digits' codes are not training codes
    assert rows["ot_plain"]["off_support_rate"] == 0.0
    assert rows["gaussian"]["copies"] < 0.05
    for name in mnist.GENERATORS:
        assert rows[name]["samples_per_s"] > 0
    assert 0 <= rows["ot_extended"]["near_singular_fraction"] <= 1
    lat = m["latent"]
    assert 0 < lat["knn_agreement"] <= 1 and 1 <= lat["n_modes"] <= lat["n_components"] and lat["dim"] == 4
    assert set(m["detectors"]) == {"ot_extended", "ot_plain", "ddpm", "ddim", "dpm_solver"}
    assert m["detectors"]["ddpm"]["kind"] == "x0 trajectory variance"


def test_every_generator_returns_raw_codes_in_one_space(runs):
    """No pipeline looks at a generator's name: every sample is a raw code, standardised by one LatentSpace."""
    first, _ = runs
    art, z_train = first.artifacts, first.artifacts.z
    for name in mnist.GENERATORS:
        z = first.samples[name]["z"]
        assert z.shape == (TINY.n_samples, TINY.latent_dim)
        assert np.allclose(art.latent.transform(first.samples[name]["codes"]), z)
        # standardised samples have the training codes' scale (not raw, not doubly standardised)
        assert 0.3 < np.std(z) / np.std(z_train) < 3, name


def test_second_call_reuses_the_cache(runs):
    first, second = runs
    assert not any(first.metrics["cache_hits"].values())
    assert second.metrics["all_cached"]
    assert set(second.metrics["cache_hits"]) == {"autoencoder", "classifier", "ot", "diffusion"}
    rows1 = {**first.metrics["generators"], **first.metrics["floors"]}
    rows2 = {**second.metrics["generators"], **second.metrics["floors"]}
    for name in ("ot_plain", "ot_extended", "ddim", "real"):
        assert rows1[name]["mixed_rate"] == rows2[name]["mixed_rate"]
        assert rows1[name]["fid"] == pytest.approx(rows2[name]["fid"])


def test_quantile_threshold_and_facet_rule_change_only_the_extended_ot_row(runs, tmp_path):
    first, _ = runs
    cache = os.path.join(os.path.dirname(first.paths["report"]), "..", "cache")
    third = _run(dataclasses.replace(TINY, angle_quantile=0.7, blend_rule="facet"), tmp_path / "c", cache)
    m, f = third.metrics, first.metrics
    assert m["all_cached"]
    assert f["ot"]["angle_rule"] == "gap" and f["ot"]["blend_rule"] == "component"
    assert m["ot"]["angle_rule"] == "quantile 0.7" and m["ot"]["blend_rule"] == "facet"
    assert m["ot"]["n_singular_pairs"] == pytest.approx(0.3 * m["ot"]["n_pairs"], rel=0.05)
    for name in ("ot_plain", "ddim"):
        assert m["generators"][name]["mixed_rate"] == f["generators"][name]["mixed_rate"]
    assert m["floors"]["real"]["mixed_rate"] == f["floors"]["real"]["mixed_rate"]
    assert "quantile 0.7 rule" in open(third.paths["report"]).read()


def test_mode_mixture_points(runs):
    first, _ = runs
    panels = mnist.mode_mixture_points(TINY, first.artifacts, mnist.make_generators(TINY, first.artifacts)[1],
                                       n_points=20)
    for p in panels.values():
        assert p["z"].shape == (20, 4) and p["flagged"].shape == (20,) and p["probs"].shape == (20, 10)
        assert np.allclose(p["probs"].sum(1), 1, atol=1e-4)


@pytest.mark.parametrize("kw, exc", [
    (dict(n_samples=5), ValueError),            # must exceed k = 5
    (dict(latent_dim=0), ValueError),
    (dict(ae_epochs=1.5), TypeError),
    (dict(taus=(0.2, 1.5)), ValueError),
    (dict(taus=(0.1, 0.3)), ValueError),        # the headline tau 0.2 is not among them: refused at once
    (dict(seed=-1), ValueError),
    (dict(angle_quantile=1.5), ValueError),
    (dict(blend_rule="simplex"), ValueError),
    (dict(n_train=3), ValueError),
    (dict(latent="pca"), ValueError),
    (dict(angle_rule="steep"), ValueError),
])
def test_settings_are_checked_when_made(kw, exc):
    with pytest.raises(exc):
        MNISTSettings(**kw)


def test_out_dir_must_be_a_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="folder"):
        mnist.run(TINY, f)


@pytest.mark.parametrize("latent", ["supervised", "separated"])
def test_other_latents_run_through_the_same_stages(latent, tmp_path, monkeypatch):
    """Every latent of --latent goes through fit -> generators -> sample -> score (tiny models)."""
    from otgen.autoencoder import ImageAutoencoder, SeparatedLatent

    tiny_ae = dict(epochs=1, batch_size=128)
    if latent == "separated":
        monkeypatch.setitem(mnist.LATENTS, "separated", mnist.LATENTS["separated"]._replace(
            build=lambda s, dev, verbose: SeparatedLatent(latent_dim=s.dim(), epochs=1, embed_steps=20, decoder_epochs=2,
                                                          autoencoder=ImageAutoencoder(latent_dim=6, **tiny_ae),
                                                          device=dev)))
    settings = dataclasses.replace(TINY, latent=latent, latent_dim=3, ae_epochs=1, n_samples=60, n_train=300)
    run = _run(settings, tmp_path / latent, tmp_path / "cache")
    m = run.metrics
    assert m["settings"]["latent"] == latent and m["latent"]["name"] == latent and m["latent"]["dim"] == 3
    assert run.artifacts.z.shape == (300, 3)
    stages = m["timings"]["latent_stages"]           # the separated latent records its stages; an autoencoder does not
    if latent == "separated":
        assert set(stages) == {"contrastive", "embedding", "autoencoder", "decoder"} and min(stages.values()) >= 0
    else:
        assert stages is None
    assert 0 <= m["generators"]["ot_extended"]["mixed_rate"]["0.2"] <= 1


def test_comparison_figures_show_every_training_curve(runs, tmp_path):
    """The report's figures: samples, mixture against τ with error bars, and the three training curves."""
    run = runs[0]
    paths = comparison_figures(run, tmp_path)
    for key in ("samples", "mode_mixture", "diffusion_loss", "training"):
        assert open(paths[key], "rb").read(4) == b"\x89PNG"
    with open(tmp_path / "mnist_training.json") as f:
        js = json.load(f)
    assert len(js["latent"]["loss"]) == TINY.ae_epochs                     # one point per epoch
    assert len(js["ot"]["tv"]) == run.artifacts.ot.n_iter_
    assert js["ot"]["tol"] == TINY.ot_tol and js["diffusion"]["last"] > 0
    with open(tmp_path / "mnist_mode_mixture_vs_tau.json") as f:
        curves = json.load(f)["rates"]
    assert all(len(c["se"]) == len(TINY.taus) for c in curves.values())
