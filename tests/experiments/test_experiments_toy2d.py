"""The 2-D experiments behind the toy figures (otgen.experiments.toy2d): settings, fits and scores.

(Named ``test_experiments_toy2d.py``: ``tests/data/test_toy2d.py`` exists and the test folders are
not packages, so the two basenames must differ.)
"""

import dataclasses
import re

import numpy as np
import pytest

from otgen.experiments.toy2d import (DetectorPRSettings, ModeMixture2DSettings, SingularSetSettings, run_detector_pr,
                                     run_mode_mixture_2d, run_singular_set)
from otgen.metrics.latent import off_support_rate

SETTINGS = (SingularSetSettings, ModeMixture2DSettings, DetectorPRSettings)


@pytest.mark.parametrize("cls", SETTINGS)
def test_settings_docstring_names_every_field(cls):
    documented = set(re.findall(r"^    (\w+(?:, \w+)*) :", cls.__doc__, flags=re.M))
    names = {n for entry in documented for n in entry.split(", ")}
    assert {f.name for f in dataclasses.fields(cls)} <= names


@pytest.mark.parametrize("cls, bad, error", [
    (SingularSetSettings, dict(n_targets=2), ValueError), (SingularSetSettings, dict(seed=-1), ValueError),
    (SingularSetSettings, dict(tol=0.0), ValueError), (ModeMixture2DSettings, dict(dataset="moons"), ValueError),
    (ModeMixture2DSettings, dict(diffusion_method="euler"), ValueError),
    (ModeMixture2DSettings, dict(num_inference_steps=0), ValueError),
    (ModeMixture2DSettings, dict(diffusion_kwargs={"lr": 1e-3}), TypeError),
    (DetectorPRSettings, dict(k=1), ValueError), (DetectorPRSettings, dict(source="cube"), ValueError),
    (DetectorPRSettings, dict(seed=1.5), TypeError)])
def test_settings_refuse_bad_values(cls, bad, error):
    with pytest.raises(error, match=next(iter(bad))):
        cls(**bad)


def test_settings_are_frozen_and_accept_none_steps():
    s = ModeMixture2DSettings(num_inference_steps=None, diffusion_kwargs=(("lr", 1e-3),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1


def test_run_singular_set():
    res = run_singular_set(SingularSetSettings(n_targets=400, seed=1))
    sc = res.scores
    assert sc["n_singular_facets"] > 0 and sc["singular_length"] > 0
    assert sc["threshold"] == pytest.approx(5.0 * sc["median_angle"])
    assert sc["tv_error"] < 1e-6
    assert res.targets.shape == (400, 2) and len(res.cells) == 400
    assert np.array_equal(res.singular, res.angles > res.threshold)
    assert sc["n_facets"] == len(res.pairs) == len(res.segments) == len(res.lengths)
    again = run_singular_set(SingularSetSettings(n_targets=400, seed=1))
    assert again.scores == sc                                 # one seed, one answer


def test_run_detector_pr():
    res = run_detector_pr(DetectorPRSettings(n=200, n_test=4000, seed=0))
    sc = res.scores
    assert sc["n_components"] == 2 and sc["components_match_labels"]
    assert sc["pair_precision"] == 1.0 and sc["pair_recall"] == 1.0
    assert sc["n_true"] > 0 and sc["precision"] >= 0.9 and sc["recall"] >= 0.9
    assert res.test_points.shape == (4000, 2) and res.truth.shape == res.flagged.shape == (4000,)
    assert sc["true_positives"] + sc["false_negatives"] == sc["n_true"] == int(res.truth.sum())
    assert sc["true_positives"] + sc["false_positives"] == sc["n_flagged"] == int(res.flagged.sum())
    assert np.array_equal(res.singular_pairs, res.detector.singular_pairs_)
    # the singular pairs found join the two blobs (pair precision 1)
    assert (res.labels[res.singular_pairs[:, 0]] != res.labels[res.singular_pairs[:, 1]]).all()


def test_run_mode_mixture_2d():
    s = ModeMixture2DSettings(dataset="grid", n_data=250, n_samples=300, diffusion_steps=30, num_inference_steps=20,
                              diffusion_hidden=32, diffusion_depth=1)
    res = run_mode_mixture_2d(s)
    sc = res.scores
    assert set(sc["off_support"]) == set(res.samples) == {"ot_plain", "ot_extended", "diffusion"}
    assert sc["off_support"]["ot_plain"] == 0.0           # the plain map outputs data points only
    assert sc["n_modes_true"] == 25
    for x in res.samples.values():
        assert isinstance(x, np.ndarray) and x.shape == (300, 2)
    assert res.near_singular.shape == (300,) and res.near_singular.dtype == bool
    assert sc["near_singular_fraction"] == pytest.approx(res.near_singular.mean())
    gap = np.linalg.norm(res.targets[:, None] - res.data[None], axis=-1).min(1)
    assert len(res.targets) == len(res.data) and gap.max() < 1e-4    # targets back in the data's space
    assert sc["radius"] == pytest.approx(off_support_rate(res.data, res.data)["radius"])

