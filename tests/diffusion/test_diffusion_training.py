"""Training and sampling loops, and the LatentDiffusion estimator."""

import numpy as np
import pytest
import torch

from sklearn.base import clone

from otgen import NotFittedError
from otgen.diffusion import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, LatentDiffusion, MLPDenoiser,
                             sample, train_denoiser)
from otgen.diffusion.latent import DPM_LAMBDA_MIN
from otgen.latent import LatentSpace

MEAN = torch.tensor([2.0, -1.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])


def _gaussian(n, seed):
    g = torch.Generator().manual_seed(seed)
    return MEAN + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(COV).T


@pytest.fixture(scope="module")
def trained_2d():
    torch.manual_seed(0)
    model = MLPDenoiser(2, hidden=64, depth=2, time_embed_dim=32)
    schedule = DDPMScheduler(beta_schedule="linear")
    hist = train_denoiser(model, _gaussian(4000, 0), schedule, n_steps=1500, batch_size=256, lr=2e-3,
                          device="cpu", seed=0, verbose=False)
    return model, hist


def test_training_loss_decreases(trained_2d):
    _, hist = trained_2d
    loss = np.asarray(hist["loss"])
    assert loss.shape == (1500,) and np.isfinite(loss).all()
    assert loss[-200:].mean() < 0.6 * loss[:200].mean()


@pytest.mark.parametrize("scheduler,steps", [(DDPMScheduler(), 250), (DDIMScheduler(), 100),
                                             (DPMSolverMultistepScheduler(), 20)])
def test_trained_denoiser_recovers_gaussian(trained_2d, scheduler, steps):
    model, _ = trained_2d
    x = sample(model, scheduler, 4000, (2,), num_inference_steps=steps, seed=1, device="cpu", verbose=False)
    assert x.shape == (4000, 2) and bool(torch.isfinite(x).all())
    # sampling error of the mean ~0.016, of the covariance ~0.02-0.03
    assert torch.allclose(x.mean(0), MEAN, atol=0.1)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.12)


def test_sample_reproducible_and_batched_shapes(trained_2d):
    model, _ = trained_2d
    s = DDPMScheduler()
    a = sample(model, s, 10, 2, num_inference_steps=20, seed=5, device="cpu", verbose=False)
    b = sample(model, s, 10, 2, num_inference_steps=20, seed=5, device="cpu", verbose=False)
    c = sample(model, s, 10, 2, num_inference_steps=20, seed=6, device="cpu", verbose=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    d = sample(model, s, 10, 2, num_inference_steps=20, seed=5, batch_size=3, device="cpu", verbose=False)
    assert d.shape == (10, 2)


def test_training_is_shape_generic():
    """The loops only need model(x_t, t) -> eps: a per-element model on (B, 2, 3) data."""

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t):
            return self.w * x

    model = Tiny()
    hist = train_denoiser(model, torch.randn(50, 2, 3), DDPMScheduler(100), n_steps=20, batch_size=8,
                          device="cpu", verbose=False, ema=None)
    assert len(hist["loss"]) == 20 and float(model.w.detach()) != 0.0
    x = sample(model, DDIMScheduler(100), 5, (2, 3), num_inference_steps=10, device="cpu", verbose=False)
    assert x.shape == (5, 2, 3)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormal floats")
def test_training_and_sampling_run_with_subnormals_flushed():
    """Both loops flush subnormal floats while they run (they slow CPU arithmetic) and restore the mode after."""
    from otgen._base import denormals_flushed

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def forward(self, x, t):
            self.seen.append(denormals_flushed())
            return self.w * x

    model, before = Probe(), denormals_flushed()
    train_denoiser(model, torch.randn(20, 2), DDPMScheduler(50), n_steps=3, batch_size=8, device="cpu", ema=None)
    sample(model, DDIMScheduler(50), 4, (2,), num_inference_steps=3, device="cpu")
    assert model.seen and all(model.seen) and denormals_flushed() == before


def test_train_bad_inputs():
    model = MLPDenoiser(2, hidden=8, depth=1, time_embed_dim=4)
    s = DDPMScheduler(100)
    with pytest.raises(ValueError, match="NaN"):
        train_denoiser(model, np.array([[0.0, np.nan]]), s, n_steps=1, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        train_denoiser(model, np.zeros(10), s, n_steps=1, device="cpu", verbose=False)
    with pytest.raises(TypeError, match="NoiseSchedule"):
        train_denoiser(model, np.zeros((10, 2)), "linear", n_steps=1, device="cpu", verbose=False)
    with pytest.raises(TypeError, match="nn.Module"):
        train_denoiser(lambda x, t: x, np.zeros((10, 2)), s, n_steps=1, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="ema"):
        train_denoiser(model, np.zeros((10, 2)), s, n_steps=1, ema=1.5, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="n_steps"):
        train_denoiser(model, np.zeros((10, 2)), s, n_steps=0, device="cpu", verbose=False)


@pytest.fixture(scope="module")
def fitted_latent():
    Y = np.random.default_rng(0).normal([1.0, -3.0, 10.0], [0.5, 2.0, 0.1], size=(500, 3))
    return Y, LatentDiffusion(hidden=32, depth=1, time_embed_dim=16, n_steps=300, num_train_timesteps=100,
                              device="cpu").fit(Y)


TINY = dict(hidden=8, depth=1, time_embed_dim=4, n_steps=3, num_train_timesteps=10, device="cpu")


def test_latent_diffusion_fit_attributes(fitted_latent):
    Y, est = fitted_latent
    assert est.n_features_in_ == 3 and len(est.history_["loss"]) == 300
    assert isinstance(est.latent_, LatentSpace) and est.latent is None
    np.testing.assert_allclose(est.latent_.mean_, Y.mean(0), rtol=1e-12)
    np.testing.assert_allclose(est.latent_.scale_, Y.std(0), rtol=1e-12)
    Z = (Y - Y.mean(0)) / Y.std(0)
    assert est.clip_range_ == pytest.approx(np.abs(Z).max(), rel=1e-4)
    x = est.sample(200, method="ddim", seed=0)
    assert isinstance(x, np.ndarray) and x.shape == (200, 3) and x.dtype == np.float32
    # standardisation is undone: samples live at the data's location and scale
    np.testing.assert_allclose(x.mean(0), [1.0, -3.0, 10.0], atol=0.5)
    assert float(x[:, 2].std()) < 0.5


def test_latent_diffusion_sample_seed_and_info(fitted_latent):
    _, est = fitted_latent
    a = est.sample(20, num_inference_steps=10)
    np.testing.assert_array_equal(a, est.sample(20, num_inference_steps=10))      # seed=None: the "sample" stream
    np.testing.assert_array_equal(est.sample(20, 3, num_inference_steps=10),
                                  est.sample(20, seed=3, num_inference_steps=10))
    assert not np.array_equal(a, est.sample(20, seed=3, num_inference_steps=10))
    codes, info = est.sample(20, method="ddim", return_info=True)
    assert set(info) == {"method", "num_inference_steps", "variance_steps", "x0_variance"}
    assert (info["method"], info["num_inference_steps"], info["variance_steps"]) == ("ddim", 50, 10)
    np.testing.assert_array_equal(codes, est.sample(20, method="ddim"))
    info = est.sample(4, return_info=True)[1]
    assert (info["method"], info["num_inference_steps"], info["variance_steps"]) == ("ddpm", 100, 20)  # capped at T
    with pytest.raises(TypeError, match="seed"):
        est.sample(3, seed=1.5)


def test_latent_diffusion_dpm_solver(fitted_latent):
    _, est = fitted_latent
    codes, info = est.sample(50, seed=2, method="dpm_solver", return_info=True)
    assert (info["method"], info["num_inference_steps"], info["variance_steps"]) == ("dpm_solver", 20, 4)
    assert codes.shape == (50, 3) and np.isfinite(info["x0_variance"]).all()
    np.testing.assert_array_equal(codes, est.sample(50, seed=2, method="dpm_solver"))
    # DPM-Solver starts at lambda = -4 (t = 97 of 100 on the cosine schedule) and drops t = 0: at most 97 steps
    assert est.sample(3, method="dpm_solver", num_inference_steps=97).shape == (3, 3)
    with pytest.raises(ValueError, match="<= 97"):
        est.sample(3, method="dpm_solver", num_inference_steps=98)


def test_latent_diffusion_takes_a_scheduler_object(fitted_latent):
    _, est = fitted_latent
    mine = DPMSolverMultistepScheduler(100, "cosine", clip_sample=est.clip_range_, lambda_min_clipped=DPM_LAMBDA_MIN)
    codes, info = est.sample(30, seed=4, method=mine, num_inference_steps=10, return_info=True)
    np.testing.assert_array_equal(codes, est.sample(30, seed=4, method="dpm_solver", num_inference_steps=10))
    assert (info["method"], info["num_inference_steps"]) == ("DPMSolverMultistepScheduler", 10)
    with pytest.raises(ValueError, match="num_inference_steps is required"):
        est.sample(3, method=mine)
    with pytest.raises(ValueError, match="not built on the schedule"):
        est.sample(3, method=DDIMScheduler(100, "linear"), num_inference_steps=10)
    with pytest.raises(ValueError, match="eta"):
        est.sample(3, method=mine, num_inference_steps=10, eta=0.5)
    with pytest.raises(TypeError, match="set_timesteps and step"):
        est.sample(3, method=object(), num_inference_steps=10)


def test_latent_diffusion_latent_setting():
    Y = np.random.default_rng(1).normal(4.0, 3.0, size=(40, 2))
    space = LatentSpace().fit(Y[:20])                       # fitted on other codes: used as it is
    est = LatentDiffusion(latent=space, **TINY).fit(Y)
    assert est.latent_ is space and est.latent is space
    assert est.clip_range_ == pytest.approx(float(np.abs(space.transform(Y)).max()), rel=1e-5)
    unfitted = LatentSpace(standardize=False)               # not fitted: a copy is fitted on Y
    est = LatentDiffusion(latent=unfitted, **TINY).fit(Y)
    assert est.latent_ is not unfitted and not hasattr(unfitted, "mean_")
    np.testing.assert_array_equal(est.latent_.mean_, [0.0, 0.0])
    assert est.clip_range_ == pytest.approx(np.abs(Y).max(), rel=1e-5)
    with pytest.raises(ValueError, match="dimension 2"):
        LatentDiffusion(latent=space, **TINY).fit(np.zeros((5, 3)))
    with pytest.raises(TypeError, match="LatentSpace"):
        LatentDiffusion(latent="standard", **TINY).fit(Y)


def test_latent_diffusion_numpy_and_torch_input():
    Y = np.random.default_rng(2).normal(size=(30, 2)).astype(np.float32)
    a = LatentDiffusion(**TINY).fit(Y)
    b = LatentDiffusion(**TINY).fit(torch.from_numpy(Y))
    assert a.history_ == b.history_
    for est in (a, b):
        x = est.sample(5, seed=0, num_inference_steps=3)
        assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_array_equal(a.sample(5, seed=0), b.sample(5, seed=0))


def test_latent_diffusion_clone_and_params():
    space = LatentSpace(standardize=False)
    est = LatentDiffusion(n_steps=7, latent=space, seed=3)
    params = est.get_params(deep=True)
    assert params["n_steps"] == 7 and params["latent"] is space and params["latent__standardize"] is False
    assert params["verbose"] is False
    twin = clone(est)
    assert twin.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    assert twin.n_steps == 7 and twin.seed == 3 and isinstance(twin.latent, LatentSpace) and twin.latent is not space
    assert "n_steps=7" in repr(est)
    assert est.set_params(latent__standardize=True) is est and space.standardize is True


def test_latent_diffusion_save_load_round_trip(fitted_latent, tmp_path):
    _, est = fitted_latent
    path = tmp_path / "ld.pt"
    est.save(path)
    est2 = LatentDiffusion.load(path, device="cpu")
    assert est2.get_params() == {**est.get_params(), "device": "cpu"}
    for method in ("ddpm", "ddim"):
        a = est.sample(50, method=method, seed=3)
        b = est2.sample(50, method=method, seed=3)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(est.sample(10, num_inference_steps=5), est2.sample(10, num_inference_steps=5))
    assert not np.array_equal(est.sample(50, method="ddpm", seed=3), est.sample(50, method="ddpm", seed=4))
    assert est2.history_ == est.history_ and est2.clip_range_ == est.clip_range_
    np.testing.assert_array_equal(est2.latent_.mean_, est.latent_.mean_)
    np.testing.assert_array_equal(est2.latent_.scale_, est.latent_.scale_)
    assert LatentDiffusion.load(path, device="cpu", verbose=True).verbose is True     # settings can be overridden


def test_latent_diffusion_save_keeps_settings_and_unstandardised_latent(tmp_path):
    Y = np.random.default_rng(3).normal(2.0, 1.0, size=(20, 4))
    est = LatentDiffusion(denoiser="dit", n_tokens=2, heads=2, mlp_ratio=1, ema=None, schedule="linear",
                          latent=LatentSpace(standardize=False), **TINY).fit(Y)
    est.save(tmp_path / "m.pt")
    back = LatentDiffusion.load(tmp_path / "m.pt")
    assert back.latent is None and back.latent_.standardize is False
    for name in ("denoiser", "n_tokens", "heads", "mlp_ratio", "ema", "schedule", "n_steps", "seed"):
        assert getattr(back, name) == getattr(est, name), name
    np.testing.assert_array_equal(back.sample(3, seed=1), est.sample(3, seed=1))


def test_latent_diffusion_not_fitted_and_wrong_file(tmp_path):
    est = LatentDiffusion()
    for call in (lambda: est.sample(3), lambda: est.save(tmp_path / "x.pt")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    LatentSpace().fit(np.zeros((3, 2))).save(tmp_path / "space.pt")
    with pytest.raises(ValueError, match="holds a LatentSpace, not a LatentDiffusion"):
        LatentDiffusion.load(tmp_path / "space.pt")


def test_latent_diffusion_bad_inputs(fitted_latent, tmp_path):
    _, est = fitted_latent
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        LatentDiffusion().fit(np.zeros(5))
    with pytest.raises(ValueError, match="schedule"):
        LatentDiffusion(schedule="quadratic").fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="Inf"):
        LatentDiffusion().fit(np.array([[0.0, np.inf], [1.0, 2.0]]))
    with pytest.raises(TypeError, match="hidden"):
        LatentDiffusion(hidden=1.5).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="method"):
        est.sample(3, method="euler")
    with pytest.raises(ValueError, match="num_inference_steps"):
        est.sample(3, num_inference_steps=101)
    with pytest.raises(ValueError, match="eta"):
        est.sample(3, method="ddpm", eta=0.5)
    with pytest.raises(ValueError, match="n must be"):
        est.sample(0)
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a file written by an otgen estimator"):
        LatentDiffusion.load(bad)
