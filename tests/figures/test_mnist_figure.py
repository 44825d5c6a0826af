"""The MNIST mode-mixture figure (seeds' Fig. 3) with tiny settings, and its helpers."""

import json
import os
import warnings

import numpy as np
import pytest
import torch

from otgen.figures._common import plt
from otgen.figures.mnist_mode_mixture import image_grid, mixed_mask, mnist_mode_mixture_figure


def test_figure_tiny(tmp_path):
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = mnist_mode_mixture_figure(tmp_path, ae_epochs=1, clf_epochs=1, n_points=30, diffusion_steps=150,
                                        ot_tol=0.2, ot_max_iter=8, method="ddim", device="cpu",
                                        n_train=500)
    assert os.path.getsize(out["png"]) > 0
    with open(out["json"]) as f:
        js = json.load(f)
    for key in ("ot", "diffusion"):
        assert 0 <= js["mixed"][key] <= 30
        assert 0 <= js["flagged"][key] <= 30
        assert js["mixed_and_flagged"][key] <= min(js["mixed"][key], js["flagged"][key])
        assert np.asarray(js["points"][key]).shape == (30, 2)
    assert js["n_modes_detected"] >= 1
    assert not any(js["cache_hits"].values())


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
