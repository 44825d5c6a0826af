import inspect

import numpy as np
import pytest
import torch
from sklearn.base import clone

from otgen import NotFittedError
from otgen.data import two_blobs
from otgen.diffusion import LatentDiffusion
from otgen.generate import DiffusionGenerator, GaussianCodeGenerator, Generator, OTGenerator
from otgen.latent import LatentSpace
from otgen.singular import SingularSetDetector
from otgen.transport import SemiDiscreteOT


@pytest.fixture(scope="module")
def blobs():
    """Raw codes 10 + 3 (two blobs), one shared LatentSpace, and the OT map and detector of the standardised codes."""
    Y, labels = two_blobs(200, seed=0)
    codes = (10.0 + 3.0 * Y).astype(np.float32)
    latent = LatentSpace().fit(codes)
    z = latent.transform(codes)
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(z)
    return codes, labels, latent, ot, SingularSetDetector().fit(ot)


def _gen(blobs, **kw):
    codes, _, latent, ot, det = blobs
    return OTGenerator(latent, ot, det, **kw).fit(codes)


def test_plain_generator_is_exactly_the_brenier_map_through_the_latent_space(blobs):
    codes, labels, latent, ot, det = blobs
    gen = _gen(blobs, extension="none", seed=4)
    assert isinstance(gen, Generator)
    assert gen.latent_ is latent and gen.ot_ is ot and gen.detector_ is det      # fitted parts used as they are
    np.testing.assert_array_equal(gen.target_index_, np.arange(len(codes)))
    out, info = gen.sample(3000, return_info=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3000, 2)
    # raw codes out: their standardisation is exactly the OT target of the source point's cell
    cells = ot.assign(torch.as_tensor(info["source"])).numpy()
    np.testing.assert_array_equal(info["cells"], cells)
    np.testing.assert_allclose(latent.transform(out), ot.targets_[cells].numpy(), atol=1e-5)
    assert np.abs(out.mean(0) - codes.mean(0)).max() < 0.3 * codes.std(0).max()   # raw space, not standardised
    assert not info["blended"].any() and info["n_resampled"] == 0 and info["temperature"] is None
    np.testing.assert_array_equal(info["near_singular"], det.predict(info["source"]))
    for key in ("source", "cells", "near_singular", "blended"):
        assert isinstance(info[key], np.ndarray)
    np.testing.assert_array_equal(gen.sample(3000), out)                            # seed=None: the instance's seed


def test_extension_never_blends_two_modes(blobs):
    codes, labels, latent, ot, det = blobs
    out, info = _gen(blobs, k=3, seed=1).sample(20000, return_info=True)
    P = torch.as_tensor(latent.transform(out))
    assert P.shape == (20000, 2)
    blob = labels[info["cells"]]
    # x_1 has the sign of the blob of the point's cell
    np.testing.assert_array_equal(P[:, 0].numpy() > 0, blob == 1)
    # blended points are convex combinations of the top-k targets, all in one blob
    vals, idx = ot.topk(torch.as_tensor(info["source"]), 3)
    blended = info["blended"]
    lab = labels[idx.numpy()]
    assert (lab[blended] == lab[blended][:, :1]).all()
    w = torch.softmax((vals - vals[:, :1]).double() / info["temperature"], 1)
    expected = (w[:, :, None] * ot.targets_[idx].double()).sum(1).float()
    torch.testing.assert_close(P[blended], expected[blended], atol=1e-5, rtol=1e-5)
    # near the singular set: the plain map, never a blend
    near = info["near_singular"]
    np.testing.assert_array_equal(near, ~blended)
    assert near.any() and blended.mean() > 0.9
    torch.testing.assert_close(P[near], ot.targets_[info["cells"][near]], atol=1e-5, rtol=1e-5)
    assert (lab[near] != lab[near][:, :1]).any(1).all()
    # the extension moves points off the targets (it interpolates inside a mode)
    assert (torch.cdist(P[blended], ot.targets_).min(1).values > 1e-4).any()


def test_blend_rules_use_the_detector_tests(blobs):
    codes, labels, latent, ot, det = blobs
    for rule, test in (("component", det.same_component), ("facet", det.no_singular_pair)):
        gen = _gen(blobs, blend_rule=rule, seed=2)
        _, info = gen.sample(3000, return_info=True)
        _, idx = ot.topk(torch.as_tensor(info["source"]), 3)
        np.testing.assert_array_equal(info["blended"], test(idx.numpy()))


def test_resample_avoids_the_singular_set(blobs):
    _, info = _gen(blobs, boundary="resample", seed=2).sample(20000, return_info=True)
    assert info["n_resampled"] > 0
    assert not info["near_singular"].any() and info["blended"].all()


def test_seeds_default_detector_and_temperature_stream(blobs):
    codes, labels, latent, ot, det = blobs
    gen = OTGenerator(latent, ot, seed=5).fit(codes)                  # fits its own detector
    assert gen.detector_ is not det and gen.detector_.n_components_ == 2 and gen.detector_.seed == 5
    P1, P2, P3 = gen.sample(500), gen.sample(500, seed=5), gen.sample(500, seed=6)
    assert np.array_equal(P1, P2) and not np.array_equal(P1, P3)
    Pd = OTGenerator(latent, ot, det, seed=5).fit(codes).sample(500)
    assert np.array_equal(P1, Pd)                                     # same modes, same temperature
    # the temperature comes from its own stream: another seed, another (close) temperature
    t0, t1 = _gen(blobs, seed=0).temperature_, _gen(blobs, seed=1).temperature_
    assert t0 != t1 and t0 == pytest.approx(t1, rel=0.2)
    assert _gen(blobs, temperature=0.5).temperature_ == 0.5


def test_ot_and_detector_refitted_when_not_fitted_on_these_codes():
    codes = np.random.default_rng(1).normal(3.0, 2.0, size=(40, 2)).astype(np.float32)
    latent = LatentSpace().fit(codes)
    z = latent.transform(codes)
    other = SemiDiscreteOT(tol=0.1, verbose=False, seed=3).fit(z[:30])
    det = SingularSetDetector(n_samples=4096).fit(other)
    with pytest.warns(UserWarning, match="other targets"):
        gen = OTGenerator(latent, other, det, extension="none").fit(codes)
    assert gen.ot_ is not other and gen.ot_.get_params() == other.get_params()
    torch.testing.assert_close(gen.ot_.targets_, torch.as_tensor(z))
    assert other.targets_.shape[0] == 30                               # the given map is left as it was
    assert gen.detector_ is not det and gen.detector_.fitted_on(gen.ot_) and gen.detector_.n_samples == 4096
    # an unfitted ot and detector are cloned with their settings, never fitted in place
    blank_ot, blank_det = SemiDiscreteOT(tol=0.1, verbose=False), SingularSetDetector(k=4, n_samples=4096)
    gen = OTGenerator(latent, blank_ot, blank_det, extension="none").fit(codes)
    assert not blank_ot._is_fitted() and not blank_det._is_fitted()
    assert gen.ot_.tol == 0.1 and gen.detector_.k == 4 and gen.detector_.n_samples == 4096
    # a detector fitted on that very map (e.g. loaded from a file) is used as it is
    again = OTGenerator(latent, gen.ot_, gen.detector_, extension="none").fit(codes)
    assert again.ot_ is gen.ot_ and again.detector_ is gen.detector_


def test_duplicate_codes_are_merged_with_their_weights():
    codes = np.random.default_rng(0).normal(5.0, 2.0, size=(40, 2)).astype(np.float32)
    dup = np.concatenate([codes, codes[:10]])
    gen = OTGenerator(ot=SemiDiscreteOT(tol=0.1, verbose=False), detector=SingularSetDetector(n_samples=4096),
                      extension="none").fit(dup)
    assert gen.ot_.targets_.shape == (40, 2)
    z = gen.latent_.transform(dup)
    np.testing.assert_array_equal(gen.ot_.targets_[gen.target_index_].numpy(), z)
    w = gen.ot_.weights_.numpy()[gen.target_index_]
    np.testing.assert_allclose(w[:10], 2 / 50) and np.testing.assert_allclose(w[10:40], 1 / 50)


def test_validation_and_not_fitted(blobs):
    codes, _, latent, ot, det = blobs
    with pytest.raises(NotFittedError, match="not fitted"):
        OTGenerator(latent, ot, det).sample(10)
    with pytest.raises(ValueError, match="extension"):
        OTGenerator(latent, ot, det, extension="linear").fit(codes)
    with pytest.raises(ValueError, match="blend_rule"):
        OTGenerator(latent, ot, det, blend_rule="simplex").fit(codes)
    with pytest.raises(ValueError, match="boundary"):
        OTGenerator(latent, ot, det, boundary="reflect").fit(codes)
    with pytest.raises(ValueError, match="k must be >= 2"):
        OTGenerator(latent, ot, det, k=1).fit(codes)
    with pytest.raises(ValueError, match="temperature"):
        OTGenerator(latent, ot, det, temperature=-1.0).fit(codes)
    with pytest.raises(TypeError, match="detector"):
        OTGenerator(latent, ot, detector="yes").fit(codes)
    with pytest.raises(TypeError, match="ot must be"):
        OTGenerator(latent, ot="no").fit(codes)
    with pytest.raises(TypeError, match="latent"):
        OTGenerator(latent="no", ot=ot).fit(codes)
    with pytest.raises(ValueError, match="columns"):
        OTGenerator(latent, ot, det).fit(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="NaN"):
        OTGenerator(latent, ot, det).fit(np.full((10, 2), np.nan))
    gen = _gen(blobs)
    with pytest.raises(ValueError, match="n must be >= 1"):
        gen.sample(0)
    with pytest.raises(TypeError, match="seed"):
        gen.sample(10, seed="a")


def test_contract_clone_params_docstrings():
    for cls in (Generator, OTGenerator, DiffusionGenerator, GaussianCodeGenerator):
        doc = cls.__doc__
        assert doc is not None
        for name in inspect.signature(cls.__init__).parameters:
            if name != "self":
                assert f"{name} :" in doc, (cls.__name__, name)
    gen = OTGenerator(LatentSpace(), SemiDiscreteOT(tol=0.05), k=4, blend_rule="facet", seed=3)
    c = clone(gen)
    assert c.k == 4 and c.blend_rule == "facet" and c.seed == 3 and c.ot is not gen.ot and c.ot.tol == 0.05
    assert gen.get_params()["ot__tol"] == 0.05
    assert "blend_rule='facet'" in repr(gen)
    assert "mode_rule" not in gen.get_params()
    assert clone(GaussianCodeGenerator(seed=2)).seed == 2
    assert clone(DiffusionGenerator(method="ddim")).method == "ddim"


def test_save_load_round_trip(blobs, tmp_path):
    codes, _, latent, ot, det = blobs
    gen = _gen(blobs, k=3, blend_rule="facet", seed=7)
    gen.save(tmp_path / "gen.pt")
    back = OTGenerator.load(tmp_path / "gen.pt")
    assert back.get_params(deep=False)["blend_rule"] == "facet" and back.seed == 7
    a, ia = gen.sample(2000, return_info=True)
    b, ib = back.sample(2000, return_info=True)
    np.testing.assert_array_equal(a, b)
    for key in ("source", "cells", "near_singular", "blended"):
        np.testing.assert_array_equal(ia[key], ib[key])
    assert back.temperature_ == gen.temperature_
    np.testing.assert_array_equal(back.target_index_, gen.target_index_)
    np.testing.assert_array_equal(back.latent_.scale_, latent.scale_)
    assert torch.equal(back.ot_.heights_, ot.heights_) and back.detector_.threshold_ == det.threshold_
    plain = _gen(blobs, extension="none")
    plain.save(tmp_path / "plain.pt")
    assert OTGenerator.load(tmp_path / "plain.pt").temperature_ is None
    with pytest.raises(ValueError, match="holds a OTGenerator"):
        GaussianCodeGenerator.load(tmp_path / "gen.pt")
    with pytest.raises(NotFittedError):
        OTGenerator().save(tmp_path / "x.pt")


def _old_gaussian(z, n, seed):
    """The former compare.GaussianCodeGenerator on standardised codes z: N(mean, cov), seeded torch generator."""
    mean = z.mean(0)
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    factor = v * np.sqrt(np.clip(w, 0, None))
    e = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (torch.from_numpy(mean) + e @ torch.from_numpy(factor).T).float().numpy()


def test_gaussian_generator_raw_codes_through_the_shared_latent(tmp_path):
    rng = np.random.default_rng(0)
    A = np.array([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.0, 0.0, 0.1]])
    codes = (rng.standard_normal((4000, 3)) @ A.T + [5.0, -3.0, 1.0]).astype(np.float32)
    latent = LatentSpace().fit(codes)
    gen = GaussianCodeGenerator(latent, seed=4).fit(codes)
    assert gen.latent_ is latent and gen.factor_.shape == (3, 3)
    out = gen.sample(20000)
    assert out.dtype == np.float32 and out.shape == (20000, 3)
    np.testing.assert_allclose(out.mean(0), codes.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.cov(codes, rowvar=False), atol=0.1, rtol=0.05)
    # the same draws as the former generator on standardised codes, mapped back to raw codes
    z = latent.transform(codes.astype(np.float64))
    np.testing.assert_allclose(latent.transform(gen.sample(50, seed=9)), _old_gaussian(z, 50, 9), atol=1e-5)
    assert np.array_equal(gen.sample(50), gen.sample(50, seed=4)) and not np.array_equal(gen.sample(50), out[:50])
    gen.save(tmp_path / "g.pt")
    np.testing.assert_array_equal(GaussianCodeGenerator.load(tmp_path / "g.pt").sample(50), gen.sample(50))
    with pytest.raises(NotFittedError):
        GaussianCodeGenerator().sample(3)
    with pytest.raises(ValueError, match="row"):
        GaussianCodeGenerator().fit(codes[:1])


def test_diffusion_generator_shares_the_interface(tmp_path):
    Y, _ = two_blobs(64, seed=0)
    codes = (10.0 + 3.0 * Y).astype(np.float32)
    latent = LatentSpace().fit(codes)
    model = LatentDiffusion(hidden=16, depth=1, n_steps=5, num_train_timesteps=20, device="cpu", verbose=False)
    with pytest.raises(NotFittedError, match="not fitted"):
        DiffusionGenerator(model, latent).sample(4)
    gen = DiffusionGenerator(model, latent, method="ddim", num_inference_steps=5, seed=3).fit(codes)
    assert not model._is_fitted()                                   # the given model is cloned, not trained
    assert gen.model_.latent_ is latent and gen.latent_ is latent   # trained on latent.transform(codes)
    P, info = gen.sample(7, return_info=True)
    assert isinstance(gen, Generator) and isinstance(P, np.ndarray) and P.dtype == np.float32 and P.shape == (7, 2)
    assert (info["method"], info["num_inference_steps"]) == ("ddim", 5)
    assert info["x0_variance"].shape == (7,) and (info["x0_variance"] >= 0).all()     # the model's own diagnostics
    np.testing.assert_array_equal(P, gen.sample(7, seed=3))
    np.testing.assert_array_equal(P, gen.model_.sample(7, seed=3, method="ddim", num_inference_steps=5))
    # a fitted model is used as it is
    assert DiffusionGenerator(gen.model_, latent, method="ddim").fit(codes).model_ is gen.model_
    gen.save(tmp_path / "d.pt")
    np.testing.assert_array_equal(DiffusionGenerator.load(tmp_path / "d.pt").sample(7), P)
    with pytest.raises(ValueError, match="method"):
        DiffusionGenerator(model, method="euler").fit(codes)
    with pytest.raises(ValueError, match="dimension"):
        DiffusionGenerator(gen.model_).fit(np.zeros((10, 3)))


def test_every_generator_gives_raw_codes_of_one_latent_space(blobs):
    """A pipeline treats all generators alike: sample(n) -> raw codes; no name is looked at."""
    codes, _, latent, ot, det = blobs
    model = LatentDiffusion(hidden=16, depth=1, n_steps=5, num_train_timesteps=20, device="cpu", verbose=False)
    gens = [OTGenerator(latent, ot, det), OTGenerator(latent, ot, det, extension="none"),
            DiffusionGenerator(model, latent, method="ddim", num_inference_steps=3), GaussianCodeGenerator(latent)]
    for g in gens:
        out = g.fit(codes).sample(64)
        assert g.latent_ is latent
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (64, 2)
        assert np.isfinite(out).all()


def test_generators_and_detector_on_every_device(device):
    codes = np.random.default_rng(3).normal(2.0, 1.5, size=(40, 2)).astype(np.float32)
    gen = OTGenerator(ot=SemiDiscreteOT(tol=0.1, verbose=False, device=device),
                      detector=SingularSetDetector(n_samples=4096), boundary="resample").fit(codes)
    assert gen.ot_.targets_.device.type == device
    out, info = gen.sample(100, return_info=True)
    assert isinstance(out, np.ndarray) and out.shape == (100, 2) and isinstance(info["source"], np.ndarray)
    X = torch.as_tensor(info["source"], device=device)
    flags = gen.detector_.predict(X)
    assert isinstance(flags, torch.Tensor) and flags.device.type == device
    np.testing.assert_array_equal(flags.cpu().numpy(), gen.detector_.predict(info["source"]))
