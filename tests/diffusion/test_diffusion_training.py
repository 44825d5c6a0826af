"""Training and sampling loops, and the LatentDiffusion estimator."""

import numpy as np
import pytest
import torch

from otgen.diffusion import DDIMScheduler, DDPMScheduler, LatentDiffusion, MLPDenoiser, sample, train_denoiser

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


@pytest.mark.parametrize("scheduler,steps", [(DDPMScheduler(), 250), (DDIMScheduler(), 100)])
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
                              device="cpu", verbose=False).fit(Y)


def test_latent_diffusion_fit_attributes(fitted_latent):
    Y, est = fitted_latent
    assert est.n_features_in_ == 3 and len(est.history_["loss"]) == 300
    assert torch.allclose(est.mean_, torch.tensor(Y.mean(0), dtype=torch.float32), atol=1e-5)
    assert torch.allclose(est.scale_, torch.tensor(Y.std(0, ddof=1), dtype=torch.float32), rtol=1e-4)
    Z = (Y - Y.mean(0)) / Y.std(0, ddof=1)
    assert est.clip_range_ == pytest.approx(np.abs(Z).max(), rel=1e-4)
    x = est.sample(200, method="ddim", seed=0)
    assert x.shape == (200, 3) and x.device.type == "cpu" and x.dtype == torch.float32
    # standardisation is undone: samples live at the data's location and scale
    assert torch.allclose(x.mean(0), torch.tensor([1.0, -3.0, 10.0]), atol=0.5)
    assert float(x[:, 2].std()) < 0.5


def test_latent_diffusion_save_load_round_trip(fitted_latent, tmp_path):
    _, est = fitted_latent
    path = tmp_path / "ld.pt"
    est.save(path)
    est2 = LatentDiffusion.load(path, device="cpu")
    assert est2.get_params() == {**est.get_params(), "device": "cpu"}
    for method in ("ddpm", "ddim"):
        a = est.sample(50, method=method, seed=3)
        b = est2.sample(50, method=method, seed=3)
        assert torch.equal(a, b)
    assert not torch.equal(est.sample(50, method="ddpm", seed=3), est.sample(50, method="ddpm", seed=4))
    assert est2.history_ == est.history_


def test_latent_diffusion_bad_inputs(fitted_latent, tmp_path):
    _, est = fitted_latent
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        LatentDiffusion(verbose=False).fit(np.zeros(5))
    with pytest.raises(ValueError, match="schedule"):
        LatentDiffusion(schedule="quadratic", verbose=False).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="Inf"):
        LatentDiffusion(verbose=False).fit(np.array([[0.0, np.inf], [1.0, 2.0]]))
    with pytest.raises(TypeError, match="hidden"):
        LatentDiffusion(hidden=1.5, verbose=False).fit(np.zeros((5, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        LatentDiffusion().sample(3)
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
    with pytest.raises(ValueError, match="not a LatentDiffusion checkpoint"):
        LatentDiffusion.load(bad)
