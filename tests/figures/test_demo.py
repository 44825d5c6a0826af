"""The demo figure's colours: every mode its own, neighbours far apart."""

import numpy as np
import pytest

from otgen.figures.demo import categorical_colours


@pytest.mark.parametrize("n", [1, 8, 25, 60])
def test_every_mode_has_its_own_colour(n):
    c = categorical_colours(n)
    assert c.shape == (n, 4) and np.all((0 <= c) & (c <= 1))
    rgb = c[:, :3]
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(n) * 9
    assert dist.min() > 0.02                                        # no two modes share a colour
    if n > 1:
        assert np.linalg.norm(np.diff(rgb, axis=0), axis=1).min() > 0.1   # consecutive labels stand apart


def test_rejects_no_colours():
    with pytest.raises(ValueError):
        categorical_colours(0)
