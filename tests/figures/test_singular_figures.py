"""The toy figures draw given results (no fitting here: small hand-made results of the experiments' types).

The fits and the numbers behind these figures are checked in tests/experiments/test_experiments_toy2d.py.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from otgen.experiments.toy2d import (DetectorPRResults, DetectorPRSettings, ModeMixture2DResults,
                                     ModeMixture2DSettings, SingularSetResults, SingularSetSettings)
from otgen.figures.mode_mixture_2d import mode_mixture_2d_figure
from otgen.figures.singular_set import detector_precision_recall, singular_set_figure

SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _check_files(res, numbers):
    """PNG written; the JSON holds exactly ``numbers`` (JSON-encoded) and nothing drawn-only."""
    assert os.path.getsize(res["png"]) > 1000
    with open(res["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(res["json"]) as f:
        data = json.load(f)
    assert data == json.loads(json.dumps(numbers))
    return data


def _quadrants(singular):
    """Four cells (the quadrants of the square), their 4 facets; ``singular`` marks the facets (4,)."""
    Y = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    cells = [np.array([[x0, y0], [x0 + 1, y0], [x0 + 1, y0 + 1], [x0, y0 + 1]]) for x0, y0 in Y - 0.5]
    pairs = np.array([[0, 1], [0, 2], [1, 3], [2, 3]])
    segments = np.array([[[0, -1], [0, 0]], [[-1, 0], [0, 0]], [[0, 0], [1, 0]], [[0, 0], [0, 1]]], dtype=float)
    angles = np.array([1.0, 0.1, 0.1, 1.0])
    singular = np.asarray(singular, dtype=bool)
    scores = dict(threshold=0.5, n_singular_facets=int(singular.sum()), singular_length=float(singular.sum()),
                  n_facets=4, n_targets=4, tv_error=0.0, n_iter=3, median_angle=0.55, max_angle=1.0)
    return SingularSetResults(settings=SingularSetSettings(n_targets=4), solve=None, targets=Y, domain=SQUARE,
                              cells=cells, pairs=pairs, segments=segments, lengths=np.ones(4), angles=angles,
                              threshold=0.5, singular=singular, scores=scores)


@pytest.mark.parametrize("singular", [[True, False, False, True], [False] * 4])
def test_singular_set_figure(tmp_path, singular):
    results = _quadrants(singular)
    res = singular_set_figure(results, tmp_path / "fig")
    data = _check_files(res, {**dataclasses.asdict(results.settings), **results.scores})
    assert {"threshold", "n_singular_facets", "singular_length", "min_ratio", "seed", "n_vertices"} <= set(data)
    assert os.path.basename(res["png"]) == "singular_set.png"


def test_detector_precision_recall_figure(tmp_path, rng):
    X = rng.uniform(-1, 1, size=(200, 2))
    truth, flagged = np.abs(X[:, 0]) < 0.1, np.abs(X[:, 0]) < 0.15
    T = np.array([[-2.0, 0.0], [-1.5, 0.5], [-1.5, -0.5], [2.0, 0.0], [1.5, 0.5], [1.5, -0.5]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    tp = int((truth & flagged).sum())
    scores = dict(precision=tp / flagged.sum(), recall=tp / truth.sum(), pair_precision=1.0, pair_recall=0.5,
                  n_true=int(truth.sum()), n_flagged=int(flagged.sum()), threshold=0.3, n_components=2,
                  components_match_labels=True, ot_converged=True)
    results = DetectorPRResults(settings=DetectorPRSettings(n=6, n_test=200), ot=None, detector=None, targets=T,
                                labels=labels, singular_pairs=np.array([[1, 4], [2, 5]]), test_points=X, truth=truth,
                                flagged=flagged, scores=scores)
    res = detector_precision_recall(results, tmp_path)
    data = _check_files(res, {**dataclasses.asdict(results.settings), **scores})
    assert {"precision", "recall", "pair_precision", "pair_recall", "threshold", "n_test", "k"} <= set(data)
    assert os.path.basename(res["json"]) == "detector_precision_recall.json"


@pytest.mark.parametrize("n_modes", [4, 25])                  # tab10 and tab20 colour maps
def test_mode_mixture_2d_figure(tmp_path, rng, n_modes):
    labels = np.repeat(np.arange(n_modes), 4)
    Y = np.stack([labels % 5, labels // 5], 1) + 0.05 * rng.standard_normal((len(labels), 2))
    samples = {name: Y[rng.integers(0, len(Y), 30)] + 0.1 * rng.standard_normal((30, 2))
               for name in ("ot_plain", "ot_extended", "diffusion")}
    scores = dict(off_support={"ot_plain": 0.0, "ot_extended": 0.1, "diffusion": 0.3}, radius=0.2,
                  n_modes_detected=n_modes, n_modes_true=n_modes, threshold=0.4, n_singular_pairs=2,
                  near_singular_fraction=0.1, ot_converged=True, temperature=np.float32(0.5))
    settings = ModeMixture2DSettings(dataset="grid", n_data=len(Y), n_samples=30)
    results = ModeMixture2DResults(settings=settings, ot_generator=None, diffusion=None, data=Y, labels=labels,
                                   targets=Y, singular_pairs=np.array([[0, 4], [4, 8]]), samples=samples,
                                   near_singular=np.arange(30) < 3, scores=scores)
    res = mode_mixture_2d_figure(results, tmp_path)
    data = _check_files(res, {**dataclasses.asdict(settings), **scores, "temperature": 0.5})
    assert set(data["off_support"]) == {"ot_plain", "ot_extended", "diffusion"}
    assert os.path.basename(res["png"]) == "mode_mixture_2d_grid.png"
