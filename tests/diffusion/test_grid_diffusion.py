"""SpaceTimeDiT and GridLatentDiffusion: self-attention over the patches of a latent video."""

import numpy as np
import pytest
import torch

from otgen.diffusion.grid import GridLatentDiffusion
from otgen.diffusion.transformer import SpaceTimeDiT

SHAPE = (4, 2, 4, 4)                  # (T', C', H', W'), 128 numbers


def test_shapes_and_zero_at_init():
    torch.manual_seed(0)
    m = SpaceTimeDiT(SHAPE, patch=(2, 2, 2), width=12, depth=2, heads=2)
    assert m.n_tokens == 8 and m.token_dim == 16 and m.dim == 128
    x = torch.randn(3, 128)
    assert torch.equal(m(x, torch.tensor([0, 5, 9])), torch.zeros(3, 128))
    assert m(x.view(3, *SHAPE), 4).shape == (3, *SHAPE)


def test_positions_tell_patches_apart():
    """After a gradient step the output of a shifted latent video is not the shifted output (positions matter)."""
    torch.manual_seed(0)
    m = SpaceTimeDiT(SHAPE, patch=(2, 2, 2), width=12, depth=1, heads=2)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, *SHAPE)
    shifted = torch.roll(x, shifts=2, dims=1)               # one token later in time
    out = m(x, 3)
    assert not torch.allclose(torch.roll(out, 2, dims=1), m(shifted, 3), atol=1e-4)


def test_bad_inputs():
    m = SpaceTimeDiT(SHAPE, patch=(2, 2, 2), width=12, depth=1, heads=2)
    with pytest.raises(ValueError, match="shape"):
        m(torch.zeros(2, 127), 0)
    with pytest.raises(ValueError, match="divisible"):
        SpaceTimeDiT(SHAPE, patch=(2, 2, 2), width=10, heads=4)
    with pytest.raises(ValueError, match="latent_shape"):
        SpaceTimeDiT((4, 4), patch=2)


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(200, 128)) + 3.0 * np.sign(rng.normal(size=(200, 1)))   # two modes
    model = GridLatentDiffusion(latent_shape=SHAPE, patch=(2, 2, 2), hidden=16, depth=1, n_steps=150,
                                batch_size=32, device="cpu", seed=0).fit(codes)
    return model, codes


def test_fit_sample_and_loss(fitted):
    model, codes = fitted
    assert isinstance(model.model_, SpaceTimeDiT)
    loss = model.history_["loss"]
    assert np.mean(loss[-20:]) < np.mean(loss[:20])
    out = model.sample(6, seed=1, method="ddim", num_inference_steps=5)
    assert out.shape == (6, 128) and np.isfinite(out).all()


def test_save_load_round_trip(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "d.pt")
    back = GridLatentDiffusion.load(tmp_path / "d.pt")
    assert back.get_params()["latent_shape"] == model.get_params()["latent_shape"]
    a = model.sample(3, seed=2, method="ddim", num_inference_steps=4)
    b = back.sample(3, seed=2, method="ddim", num_inference_steps=4)
    assert np.allclose(a, b, atol=1e-5)


def test_latent_shape_must_match_codes():
    with pytest.raises(ValueError, match="latent_shape"):
        GridLatentDiffusion(latent_shape=SHAPE, patch=(2, 2, 2), hidden=8, depth=1, n_steps=2).fit(np.zeros((4, 64)))


class _OracleEps(torch.nn.Module):
    """The exact noise predictor of standard-normal data: ``E[eps | x_t] = sqrt(1 - abar_t) x_t``."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.register_buffer("abar", alphas_cumprod.float())

    def forward(self, x, t):
        return (1 - self.abar[t.long()]).sqrt()[:, None] * x


@pytest.mark.parametrize("method, steps", [("ddpm", 250), ("ddim", 50)])
def test_sample_with_the_exact_denoiser_returns_the_codes_distribution(method, steps):
    """Codes N(m, s^2) per coordinate, the exact denoiser of their standardisation: samples have mean m and spread s.

    Catches a standardisation not inverted (or inverted twice) between fit and sample, a layout mix-up of the
    returned codes, and a sampler not on the schedule the denoiser was trained with.
    """
    rng = np.random.default_rng(0)
    mean, scale = rng.uniform(-5, 5, 128), rng.uniform(0.2, 4.0, 128)
    codes = mean + scale * rng.normal(size=(4000, 128))
    model = GridLatentDiffusion(latent_shape=SHAPE, patch=(2, 2, 2), hidden=8, depth=1, n_steps=1, batch_size=8,
                                device="cpu", seed=0).fit(codes)
    model.model_ = _OracleEps(model.noise_schedule().alphas_cumprod)
    out = model.sample(4000, seed=1, method=method, num_inference_steps=steps)
    assert np.allclose(out.mean(0), mean, atol=0.2 * scale)              # 4,000 draws: SE of the mean 0.016 s
    assert np.allclose(out.std(0) / scale, 1.0, atol=0.08)             # discretisation bias <= 4 % (DDIM-50)
