"""The MNIST mode-mixture figure (seeds' Fig. 3) with tiny settings, and its helpers."""

import json
import os
import warnings

import numpy as np
import pytest
import torch

from otgen.cli import main
from otgen.figures._common import plt
from otgen.figures.mnist_mode_mixture import image_grid, mixed_mask, mnist_mode_mixture_figure


def test_cli_figure_tiny(tmp_path, capsys):
    """`otgen figure mnist-mode-mixture` runs the experiment stages, then draws; a second run is cached."""
    torch.set_num_threads(1)
    args = ["figure", "mnist-mode-mixture", "--out", str(tmp_path), "--latent", "ae", "--ae-epochs", "1", "--clf-epochs", "1",
            "--n-points", "30", "--diffusion-steps", "150", "--ot-tol", "0.2", "--ot-max-iter", "8", "--method", "ddim",
            "--device", "cpu", "--n-train", "500", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
        with open(tmp_path / "mnist_mode_mixture.json") as f:
            js = json.load(f)
        assert main(args) == 0
        with open(tmp_path / "mnist_mode_mixture.json") as f:
            again = json.load(f)
    assert os.path.getsize(tmp_path / "mnist_mode_mixture.png") > 0
    for key in ("ot", "diffusion"):
        assert 0 <= js["mixed"][key] <= 30
        assert 0 <= js["flagged"][key] <= 30
        assert js["mixed_and_flagged"][key] <= min(js["mixed"][key], js["flagged"][key])
        assert np.asarray(js["points"][key]).shape == (30, 2)
    assert js["n_modes_detected"] >= 1 and js["settings"]["latent_dim"] == 2
    assert not any(js["cache_hits"].values()) and all(again["cache_hits"].values())
    assert again["mixed"] == js["mixed"]


def test_figure_draws_given_points(tmp_path):
    rng = np.random.default_rng(0)
    panel = dict(z=rng.normal(size=(12, 2)), flagged=np.arange(12) < 3, images=rng.random((12, 28, 28)),
                 probs=np.eye(10)[rng.integers(0, 10, 12)], title="t")
    panel["probs"][0] = 0.5 * (np.eye(10)[1] + np.eye(10)[2])                  # one mixed digit
    out = mnist_mode_mixture_figure({"ot": panel, "diffusion": panel}, rng.normal(size=(50, 2)),
                                    rng.integers(0, 10, 50), tmp_path, tau=0.2)
    assert out["mixed"] == {"ot": 1, "diffusion": 1} and out["flagged"] == {"ot": 3, "diffusion": 3}
    assert out["mixed_and_flagged"]["ot"] == 1 and open(out["png"], "rb").read(4) == b"\x89PNG"


def test_mixed_mask():
    p = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.4, 0.3, 0.3]])
    np.testing.assert_array_equal(mixed_mask(p, 0.2), [True, False, True, True])
    np.testing.assert_array_equal(mixed_mask(p, 0.35), [True, False, False, False])
    with pytest.raises(ValueError):
        mixed_mask(np.ones(3))
    with pytest.raises(ValueError):
        mixed_mask(p, -0.1)


def test_image_grid_outlines():
    fig, ax = plt.subplots()
    imgs = np.random.default_rng(0).random((12, 28, 28)).astype(np.float32)
    mixed = np.zeros(12, bool)
    mixed[[1, 5]] = True
    flagged = np.zeros(12, bool)
    flagged[7] = True
    image_grid(ax, imgs, mixed=mixed, flagged=flagged, ncols=4)
    assert len(ax.patches) == 3
    assert ax.images[0].get_array().shape == (84, 112)
    plt.close(fig)
