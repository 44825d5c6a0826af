"""The video critical-states figure with tiny settings, its helpers, and the CLI commands of issue 5."""

import json
import warnings

import numpy as np
import pytest
import torch

from otgen.cli import main
from otgen.data.video import bistable
from otgen.figures._common import plt
from otgen.figures.video_critical_states import filmstrip, pca_2d

TINY = ["--n-train", "200", "--ae-epochs", "1", "--dit-steps", "10", "--diffusion-steps", "20", "--n-points", "8",
        "--ddpm-steps", "8", "--ot-tol", "0.3", "--ot-max-iter", "5", "--n-long", "3", "--device", "cpu",
        "--angle-threshold", "0.05", "--critical-batch", "4096", "--quiet"]


def test_cli_figure_tiny(tmp_path):
    """`otgen figure video-critical-states` runs the experiment stages, then draws; a second run is cached."""
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["figure", "video-critical-states", "--out", str(tmp_path)] + TINY) == 0
        js = json.loads((tmp_path / "video_critical_states.json").read_text())
        assert main(["figure", "video-critical-states", "--out", str(tmp_path / "again"), "--cache-dir",
                     str(tmp_path / "cache")] + TINY) == 0
        again = json.loads((tmp_path / "again" / "video_critical_states.json").read_text())
    assert open(tmp_path / "video_critical_states.png", "rb").read(4) == b"\x89PNG"
    assert {"DiT DDPM", "MLP DDPM"} <= set(js["rates"])
    for r in js["rates"].values():
        assert 0 <= r["transition_rate"] <= 1
    assert 0 < js["data_transition_rate"] < 0.2
    assert js["n_critical_points"] <= 8 and js["n_modes"] >= 1
    assert js["localisation"]["n_clips"] == 3
    assert not any(js["cache_hits"].values()) and all(again["cache_hits"].values())
    assert again["rates"] == js["rates"]


def test_filmstrip_and_pca():
    clips, _ = bistable(5, seed=0)
    fig, ax = plt.subplots()
    filmstrip(ax, clips, n_clips=2, n_frames=6, labels=["teleport", "steady_A"], title="x")
    img = ax.images[0].get_array()
    assert img.shape == (2 * 33 + 1, 6 * 33 + 1)
    np.testing.assert_allclose(img[1:33, 1:33], clips[0, 0, 0].numpy())
    plt.close(fig)
    with pytest.raises(ValueError):
        filmstrip(plt.subplots()[1], np.zeros((2, 3, 4)))
    z = np.random.default_rng(0).normal(size=(100, 5)) * [5, 2, 1, 1, 1]
    P, (mu, axes) = pca_2d(z)
    assert P.shape == (100, 2) and abs(P[:, 0].var() / P[:, 1].var()) > 2
    np.testing.assert_allclose(pca_2d(z[:3], (mu, axes))[0], P[:3])


def test_cli_compare_video(tmp_path, capsys):
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["compare", "video", "--clips", "permanence", "--out", str(tmp_path / "cmp"), "--n-train", "60",
                     "--n-test", "20", "--ae-epochs", "1", "--dit-steps", "10", "--diffusion-steps", "20",
                     "--n-samples", "8", "--ddpm-steps", "5", "--ddim-steps", "3", "--ot-tol", "0.3", "--quiet"]) == 0
    m = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert m["dataset"] == "permanence" and m["settings"]["n_samples"] == 8 and m["settings"]["n_train"] == 60
    assert (tmp_path / "cmp" / "report.md").read_text().startswith("# Video (permanence)")
    for name in ("filmstrips", "latent_map", "diffusion_loss"):
        assert (tmp_path / "cmp" / f"video_permanence_{name}.png").exists()
    capsys.readouterr()
    assert main(["compare", "video", "--out", str(tmp_path / "y"), "--n-samples", "1", "--quiet"]) == 2
    assert "n_samples" in capsys.readouterr().err
    assert main(["compare", "video", "--angle-threshold", "steep", "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "angle_threshold" in capsys.readouterr().err and not (tmp_path / "z").exists()
    with pytest.raises(SystemExit):
        main(["compare", "video", "--clips", "cartpole"])
