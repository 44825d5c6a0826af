"""OTGenerator(extension="none") runs the detector's test (``near_singular``, about three times the cost of
the map) only when ``return_info`` asks for it; the codes are the same either way."""

import numpy as np
import pytest

from otgen.data import two_blobs
from otgen.generate import OTGenerator


@pytest.fixture(scope="module")
def plain():
    Y, _ = two_blobs(200, seed=0)
    return OTGenerator(extension="none", seed=3).fit((10.0 + 3.0 * Y).astype(np.float32))


def test_plain_sample_skips_the_detector_without_info(plain, monkeypatch):
    codes, info = plain.sample(1000, return_info=True)
    assert info["near_singular"].any()
    calls = []
    monkeypatch.setattr(plain.detector_, "predict", lambda X: calls.append(len(X)))
    np.testing.assert_array_equal(plain.sample(1000), codes)
    assert calls == []
