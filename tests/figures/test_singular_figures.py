import json
import os

import numpy as np
import pytest

from otgen.figures import detector_precision_recall, mode_mixture_2d_figure, off_support_rate, singular_set_figure


def _check_files(res, keys):
    assert os.path.getsize(res["png"]) > 1000
    with open(res["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(res["json"]) as f:
        data = json.load(f)
    assert set(keys) <= set(data)
    return data


def test_singular_set_figure(tmp_path):
    res = singular_set_figure(tmp_path / "fig", n_targets=400, seed=1)
    data = _check_files(res, ["threshold", "n_singular_facets", "singular_length"])
    assert data["n_singular_facets"] > 0 and data["singular_length"] > 0
    assert data["threshold"] == pytest.approx(5.0 * data["median_angle"])
    assert data["tv_error"] < 1e-6


def test_detector_precision_recall(tmp_path):
    res = detector_precision_recall(tmp_path, n=200, n_test=4000, seed=0)
    data = _check_files(res, ["precision", "recall", "pair_precision", "pair_recall", "threshold"])
    assert data["n_components"] == 2 and data["components_match_labels"]
    assert data["pair_precision"] == 1.0 and data["pair_recall"] == 1.0
    assert data["n_true"] > 0 and data["precision"] >= 0.9 and data["recall"] >= 0.9


def test_mode_mixture_2d_figure(tmp_path):
    res = mode_mixture_2d_figure(tmp_path, dataset="grid", n_data=250, n_samples=300, diffusion_steps=30,
                                 num_inference_steps=20, diffusion_hidden=32, diffusion_depth=1)
    data = _check_files(res, ["off_support", "radius", "n_modes_detected"])
    assert set(data["off_support"]) == {"ot_plain", "ot_extended", "diffusion"}
    assert data["off_support"]["ot_plain"] == 0.0           # the plain map outputs data points only
    assert data["n_modes_true"] == 25
    with pytest.raises(ValueError, match="dataset"):
        mode_mixture_2d_figure(tmp_path, dataset="moons")


def test_off_support_rate_exact():
    data = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])     # NN distances 1, 1, 2
    res = off_support_rate(np.array([[0.0, 0.5], [3.0, 1.9], [3.0, 2.5], [10.0, 0.0]]), data, quantile=1.0)
    assert res["radius"] == 2.0 and res["rate"] == 0.5
    assert off_support_rate(data, data)["rate"] == 0.0
    with pytest.raises(ValueError, match="columns"):
        off_support_rate(np.zeros((2, 3)), data)
    with pytest.raises(ValueError, match="quantile"):
        off_support_rate(data, data, quantile=1.5)
