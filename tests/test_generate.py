import numpy as np
import pytest
import torch

from otgen.data import two_blobs
from otgen.generate import DiffusionGenerator, Generator, OTGenerator
from otgen.singular import SingularSetDetector
from otgen.transport import SemiDiscreteOT


@pytest.fixture(scope="module")
def blobs():
    Y, labels = two_blobs(200, seed=0)
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    return Y, labels, ot, SingularSetDetector().fit(ot)


def test_plain_generator_is_exactly_the_brenier_map(blobs):
    Y, labels, ot, det = blobs
    gen = OTGenerator(ot, extension="none", seed=4)
    assert isinstance(gen, Generator)
    P, info = gen.sample(3000)
    Pref, cells = ot.sample(3000, seed=4)
    assert torch.equal(P, Pref) and torch.equal(info["cells"], cells)
    assert torch.equal(P, ot.targets_[ot.assign(info["source"])])
    assert not info["blended"].any() and info["n_resampled"] == 0


def test_extension_never_blends_two_modes(blobs):
    Y, labels, ot, det = blobs
    P, info = OTGenerator(ot, det, k=3, seed=1).sample(20000)
    assert P.shape == (20000, 2) and P.dtype == ot.targets_.dtype
    cells = info["cells"].numpy()
    blob = labels[cells]
    # x_1 has the sign of the blob of the point's cell
    np.testing.assert_array_equal(P[:, 0].numpy() > 0, blob == 1)
    # blended points are convex combinations of the top-k targets, all in one blob
    vals, idx = ot.topk(info["source"], 3)
    blended = info["blended"].numpy()
    lab = labels[idx.numpy()]
    assert (lab[blended] == lab[blended][:, :1]).all()
    w = torch.softmax((vals - vals[:, :1]).double() / info["temperature"], 1)
    expected = (w[:, :, None] * ot.targets_[idx].double()).sum(1).float()
    torch.testing.assert_close(P[blended], expected[blended])
    # near the singular set: the plain map, never a blend
    near = info["near_singular"].numpy()
    np.testing.assert_array_equal(near, ~blended)
    assert near.any() and blended.mean() > 0.9
    assert torch.equal(P[near], ot.targets_[info["cells"][near]])
    assert (lab[near] != lab[near][:, :1]).any(1).all()
    # the extension moves points off the targets (it interpolates inside a mode)
    assert (torch.cdist(P[blended], ot.targets_).min(1).values > 1e-6).any()


def test_resample_avoids_the_singular_set(blobs):
    _, _, ot, det = blobs
    P, info = OTGenerator(ot, det, boundary="resample", seed=2).sample(20000)
    assert info["n_resampled"] > 0
    assert not info["near_singular"].any() and info["blended"].all()


def test_seeds_and_default_detector(blobs):
    _, labels, ot, det = blobs
    gen = OTGenerator(ot, seed=5)                      # fits its own detector
    P1, _ = gen.sample(500)
    P2, _ = gen.sample(500, seed=5)
    P3, _ = gen.sample(500, seed=6)
    assert torch.equal(P1, P2) and not torch.equal(P1, P3)
    assert gen.detector_.n_components_ == 2
    Pd, _ = OTGenerator(ot, det, seed=5).sample(500)
    assert torch.equal(P1, Pd)


def test_validation(blobs):
    Y, _, ot, det = blobs
    with pytest.raises(ValueError, match="extension"):
        OTGenerator(ot, extension="linear").sample(10)
    with pytest.raises(ValueError, match="boundary"):
        OTGenerator(ot, det, boundary="reflect").sample(10)
    with pytest.raises(ValueError, match="k must be >= 2"):
        OTGenerator(ot, det, k=1).sample(10)
    with pytest.raises(ValueError, match="n must be >= 1"):
        OTGenerator(ot, det).sample(0)
    with pytest.raises(TypeError, match="seed"):
        OTGenerator(ot, det).sample(10, seed="a")
    with pytest.raises(TypeError, match="detector"):
        OTGenerator(ot, detector="yes").sample(10)
    with pytest.raises(ValueError, match="not fitted"):
        OTGenerator(ot, SingularSetDetector()).sample(10)
    with pytest.raises(ValueError, match="not fitted"):
        OTGenerator(SemiDiscreteOT()).sample(10)
    with pytest.raises(ValueError, match="temperature"):
        OTGenerator(ot, det, temperature=-1.0).sample(10)


def test_diffusion_generator_shares_the_interface():
    from otgen.diffusion import LatentDiffusion
    Y, _ = two_blobs(64, seed=0)
    model = LatentDiffusion(hidden=16, depth=1, n_steps=5, num_train_timesteps=20, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="not fitted"):
        DiffusionGenerator(model).sample(4)
    model.fit(Y)
    gen = DiffusionGenerator(model, method="ddim", num_inference_steps=5, seed=3)
    P, info = gen.sample(7)
    assert isinstance(gen, Generator) and P.shape == (7, 2) and info["method"] == "ddim"
    assert torch.equal(P, gen.sample(7, seed=3)[0])
    with pytest.raises(ValueError, match="method"):
        DiffusionGenerator(model, method="euler").sample(4)
