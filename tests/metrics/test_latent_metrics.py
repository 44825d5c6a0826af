"""Latent geometry: the off-support rate of generated points."""

import numpy as np
import pytest
import torch

from otgen.metrics import off_support_rate


def test_off_support_rate_exact():
    data = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])     # NN distances 1, 1, 2
    res = off_support_rate(np.array([[0.0, 0.5], [3.0, 1.9], [3.0, 2.5], [10.0, 0.0]]), data, quantile=1.0)
    assert res["radius"] == 2.0 and res["rate"] == 0.5
    # quantile 0.5 of (1, 1, 2) is 1: the points at distance 1.9 and 2.5 and 7 are off the support
    res = off_support_rate(np.array([[0.0, 0.5], [3.0, 1.9], [3.0, 2.5], [10.0, 0.0]]), data, quantile=0.5)
    assert res["radius"] == 1.0 and res["rate"] == 0.75
    assert off_support_rate(data, data)["rate"] == 0.0
    assert off_support_rate(torch.tensor(data), torch.tensor(data) + 100.0, quantile=1.0)["rate"] == 1.0
    with pytest.raises(ValueError, match="columns"):
        off_support_rate(np.zeros((2, 3)), data)
    with pytest.raises(ValueError, match="quantile"):
        off_support_rate(data, data, quantile=1.5)
    with pytest.raises(ValueError, match="at least 2 row"):
        off_support_rate(data, data[:1])


def test_off_support_rate_between_two_modes():
    """Samples in the gap between two tight clusters are off the support, samples inside them are not."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-5, 0.1, (200, 2)), rng.normal(5, 0.1, (200, 2))])
    inside = np.concatenate([rng.normal(-5, 0.05, (50, 2)), rng.normal(5, 0.05, (50, 2))])
    gap = np.stack([np.linspace(-3, 3, 40), np.linspace(-3, 3, 40)], 1)
    assert off_support_rate(inside, data)["rate"] == 0.0
    assert off_support_rate(gap, data)["rate"] == 1.0
    assert off_support_rate(np.concatenate([inside, gap]), data)["rate"] == pytest.approx(40 / 140)
