"""Trust check: k-NN precision / recall and density / coverage against ``prdc`` (Naeem et al.'s own code).

``prdc.compute_prdc`` (NAVER, MIT licence) is the reference implementation of density and coverage and
re-implements the improved precision and recall of Kynkäänniemi et al. It counts a point inside a ball
when its distance is strictly below the radius; otgen counts the closed ball (``<=``). The two differ
only for points exactly on a sphere, which continuous data never produce.
"""

import numpy as np
import pytest

from otgen.metrics import density_coverage, precision_recall

prdc = pytest.importorskip("prdc")


@pytest.fixture(params=[(300, 200, 4, 5), (120, 250, 16, 3), (60, 60, 2, 1)], ids=lambda p: "n{}-m{}-d{}-k{}".format(*p))
def real_fake(request):
    """Real and fake features that overlap partly: the fakes are shifted and narrower."""
    n, m, d, k = request.param
    rng = np.random.default_rng(n + m + d + k)
    real = rng.standard_normal((n, d))
    fake = 0.7 * rng.standard_normal((m, d)) + 1.5 / np.sqrt(d)       # shifted by 1.5 in norm
    return real, fake, k


def test_precision_recall_density_coverage_match_prdc(real_fake):
    real, fake, k = real_fake
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    ours = {**precision_recall(real, fake, k=k), **density_coverage(real, fake, k=k)}
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(ref[name]), abs=1e-12), name
    assert all(0 < ours[name] < 1 for name in ("precision", "recall", "coverage"))   # no all-or-nothing case


def test_float32_features_give_prdc_counts():
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((200, 8)).astype(np.float32), rng.standard_normal((150, 8)).astype(np.float32)
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    ours = {**precision_recall(real, fake, k=5), **density_coverage(real, fake, k=5)}
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(ref[name]), abs=1e-12), name
