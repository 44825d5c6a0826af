"""OTGenerator on a POT-named source and on a callable sampler: its draws are the solver's source
(``ot_.source_``), the map is the solver's, and a generator whose map has a callable source says
why it cannot be saved."""

import numpy as np
import pytest
import torch

from otgen.data import two_blobs
from otgen.generate import OTGenerator
from otgen.transport import SemiDiscreteOT


@pytest.fixture(scope="module")
def codes():
    Y, _ = two_blobs(200, seed=0)           # 100 a blob: two components (at 50 a blob the detector sees one)
    return (10.0 + 3.0 * Y).astype(np.float32)   # as in test_generate.py


@pytest.mark.parametrize("source", ["unif", "normal", "unif_ball"])
def test_generator_on_pot_names(codes, source, tmp_path):
    gen = OTGenerator(ot=SemiDiscreteOT(source=source, tol=0.05), seed=1).fit(codes)
    out, info = gen.sample(2000, return_info=True)
    X = info["source"]
    assert gen.ot_.get_params()["source"] == source
    assert bool(gen.ot_.source_.contains(torch.as_tensor(X)).all())
    if source == "unif":
        assert X.min() >= 0 and X.max() <= 1 and X.mean() > 0.4          # [0, 1]^2, not [-1, 1]^2
    np.testing.assert_array_equal(info["cells"], gen.ot_.assign(X))
    assert out.shape == (2000, 2) and np.isfinite(out).all()
    gen.save(tmp_path / "g.pt")
    np.testing.assert_array_equal(OTGenerator.load(tmp_path / "g.pt").sample(500), gen.sample(500))


def test_generator_on_a_callable_source(codes, tmp_path):
    rng = np.random.default_rng(2)
    ot = SemiDiscreteOT(source=lambda n: rng.uniform(-1, 1, size=(n, 2)), tol=0.05)
    gen = OTGenerator(ot=ot, k=3, seed=1).fit(codes)
    out, info = gen.sample(2000, return_info=True)
    assert out.shape == (2000, 2) and np.isfinite(out).all() and np.abs(info["source"]).max() <= 1
    assert info["near_singular"].any() and not info["near_singular"].all()
    with pytest.raises(ValueError, match="callable source cannot be saved"):
        gen.save(tmp_path / "g.pt")
