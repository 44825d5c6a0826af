"""Diffusion transformer (DiT) denoiser over latent tokens."""

import numpy as np
import pytest
import torch

from otgen.diffusion import DDIMScheduler, DDPMScheduler, LatentDiffusion, MLPDenoiser, sample, train_denoiser
from otgen.diffusion.transformer import DiTDenoiser

SMALL = dict(width=32, depth=2, heads=2, mlp_ratio=2, time_embed_dim=16)


def _perturbed(net, seed=0):
    """Give the zero-initialised adaLN / output layers random weights, so the output is not 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not bool(p.any()):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def test_shapes_for_both_layouts():
    torch.manual_seed(0)
    net = _perturbed(DiTDenoiser(3, 4, **SMALL))
    x = torch.randn(5, 12)
    t = torch.tensor([0, 10, 100, 500, 999])
    out = net(x, t)
    assert out.shape == (5, 12) and out.dtype == torch.float32
    out3 = net(x.view(5, 3, 4), t)
    assert out3.shape == (5, 3, 4)
    assert torch.allclose(out3.reshape(5, 12), out, atol=1e-6)       # token i is x[:, 4i:4i+4]
    assert torch.equal(net(x, 100), net(x, torch.full((5,), 100)))   # scalar timestep broadcasts
    assert not torch.allclose(net(x, 900), net(x, 100))              # the output depends on t
    assert net.config == dict(n_tokens=3, token_dim=4, **SMALL)


def test_zero_output_at_init_adaln_zero():
    torch.manual_seed(0)
    net = DiTDenoiser(4, 4, **SMALL)
    out = net(torch.randn(8, 16), torch.randint(1000, (8,)))
    assert torch.equal(out, torch.zeros(8, 16))
    for block in net.blocks:                                         # every gate starts at zero
        assert not block.ada[1].weight.any() and not block.ada[1].bias.any()


def test_positional_embedding_breaks_permutation_symmetry():
    torch.manual_seed(0)
    net = _perturbed(DiTDenoiser(4, 2, **SMALL)).double()
    x = torch.randn(6, 4, 2, dtype=torch.float64)
    t = torch.randint(1000, (6,))
    perm = torch.tensor([2, 0, 3, 1])
    assert not torch.allclose(net(x[:, perm], t), net(x, t)[:, perm], atol=1e-4)
    with torch.no_grad():                                            # without positions: equivariant
        net.pos.zero_()
    assert torch.allclose(net(x[:, perm], t), net(x, t)[:, perm], atol=1e-10)


def test_rows_are_independent():
    torch.manual_seed(1)
    net = _perturbed(DiTDenoiser(2, 3, **SMALL)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    t = torch.tensor([0, 7, 500, 999])
    full = net(x, t)
    for i in range(4):
        assert torch.allclose(net(x[i:i + 1], t[i:i + 1]), full[i:i + 1], atol=1e-12)


def test_gradients_flow():
    torch.manual_seed(0)
    net = DiTDenoiser(4, 4, **SMALL)
    x, eps = torch.randn(8, 16), torch.randn(8, 16)
    torch.nn.functional.mse_loss(net(x, torch.randint(1000, (8,))), eps).backward()
    assert net.out.weight.grad.abs().sum() > 0                       # at init only the output layer learns
    net.zero_grad()
    _perturbed(net)
    torch.nn.functional.mse_loss(net(x, torch.randint(1000, (8,))), eps).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert p.grad.abs().sum() > 0, name


def _mixture(n, seed=0):
    """2 tokens x 2 dims: token 0 at (+-2, 0), token 1 at (0, +-2) with independent signs, std 0.2."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 2, (n, 2), generator=g).float() * 4 - 2      # (n, 2) signs * 2
    x = torch.zeros(n, 2, 2)
    x[:, 0, 0], x[:, 1, 1] = s[:, 0], s[:, 1]
    return (x + 0.2 * torch.randn(n, 2, 2, generator=g)).reshape(n, 4)


@pytest.fixture(scope="module")
def trained_mixture():
    torch.manual_seed(0)
    net = DiTDenoiser(2, 2, **SMALL)
    hist = train_denoiser(net, _mixture(2000), DDPMScheduler(200), n_steps=400, batch_size=128, lr=2e-3,
                          device="cpu", seed=0, verbose=False)
    return net, hist


def test_short_training_lowers_the_loss(trained_mixture):
    _, hist = trained_mixture
    loss = torch.tensor(hist["loss"])
    assert loss.shape == (400,) and bool(torch.isfinite(loss).all())
    assert loss[-50:].mean() < 0.6 * loss[:50].mean()


@pytest.mark.parametrize("scheduler,steps", [(DDPMScheduler(200, clip_sample=3.0), 200),
                                             (DDIMScheduler(200, clip_sample=3.0), 25)])
def test_sampling_end_to_end(trained_mixture, scheduler, steps):
    net, _ = trained_mixture
    x = sample(net, scheduler, 400, (4,), num_inference_steps=steps, seed=1, device="cpu", verbose=False)
    assert x.shape == (400, 4) and bool(torch.isfinite(x).all())
    # most samples land near one of the 4 modes (token 0 on the first axis, token 1 on the second)
    modes = torch.tensor([[a, 0.0, 0.0, b] for a in (-2.0, 2.0) for b in (-2.0, 2.0)])
    dist, mode = torch.cdist(x, modes).min(1)
    assert float((dist < 1.0).float().mean()) > 0.8                 # measured 0.99 (DDPM), 0.93 (DDIM)
    assert int(torch.bincount(mode, minlength=4).min()) > 60         # every mode is visited (~100 each)
    assert torch.equal(x, sample(net, scheduler, 400, (4,), num_inference_steps=steps, seed=1, device="cpu",
                                 verbose=False))


def test_bad_inputs():
    net = DiTDenoiser(2, 3, **SMALL)
    with pytest.raises(ValueError, match=r"shape \(B, 6\) or \(B, 2, 3\)"):
        net(torch.zeros(4, 5), 1)
    with pytest.raises(ValueError, match=r"shape \(B, 6\) or \(B, 2, 3\)"):
        net(torch.zeros(4, 3, 2), 1)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        net(torch.zeros(4, 6), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        net([[0.0] * 6], 1)
    with pytest.raises(ValueError, match="divisible by heads"):
        DiTDenoiser(2, 3, width=30, heads=4)
    with pytest.raises(TypeError, match="n_tokens"):
        DiTDenoiser(2.0, 3)
    with pytest.raises(ValueError, match="depth"):
        DiTDenoiser(2, 3, depth=0)


# -- LatentDiffusion(denoiser="dit") ----------------------------------------------------------

DIT_EST = dict(denoiser="dit", hidden=32, depth=1, heads=2, mlp_ratio=2, time_embed_dim=16, n_steps=150,
               num_train_timesteps=100, device="cpu", verbose=False)


@pytest.fixture(scope="module")
def fitted_dit():
    Y = _mixture(300, seed=3) * torch.tensor([1.0, 3.0, 0.5, 1.0]) + torch.tensor([0.0, 5.0, 0.0, -1.0])
    return Y, LatentDiffusion(n_tokens=2, **DIT_EST).fit(Y)


def test_latent_diffusion_dit_fit_and_sample(fitted_dit):
    Y, est = fitted_dit
    assert isinstance(est.model_, DiTDenoiser) and not est.model_.training
    assert (est.model_.n_tokens, est.model_.token_dim) == (2, 2)
    assert est.n_features_in_ == 4 and len(est.history_["loss"]) == 150
    for method in ("ddpm", "ddim"):
        x = est.sample(64, method=method, num_inference_steps=20, seed=0)
        assert isinstance(x, np.ndarray) and x.shape == (64, 4) and x.dtype == np.float32 and np.isfinite(x).all()
    # the codes are standardised before the DiT sees them and mapped back after
    assert abs(float(x[:, 1].mean()) - 5.0) < 1.0


def test_latent_diffusion_dit_save_load_round_trip(fitted_dit, tmp_path):
    _, est = fitted_dit
    est.save(tmp_path / "dit.pt")
    back = LatentDiffusion.load(tmp_path / "dit.pt", device="cpu")
    assert back.get_params() == {**est.get_params(), "device": "cpu"}
    assert back.denoiser == "dit" and back.n_tokens == 2 and isinstance(back.model_, DiTDenoiser)
    for method in ("ddpm", "ddim"):
        np.testing.assert_array_equal(back.sample(20, method=method, num_inference_steps=10, seed=4),
                                      est.sample(20, method=method, num_inference_steps=10, seed=4))


def test_latent_diffusion_dit_default_tokens_and_seed():
    Y = _mixture(64, seed=5)
    a = LatentDiffusion(**{**DIT_EST, "n_steps": 5}).fit(Y)
    assert (a.model_.n_tokens, a.model_.token_dim) == (4, 1)        # n_tokens=None: one token per coordinate
    b = LatentDiffusion(**{**DIT_EST, "n_steps": 5}).fit(Y)
    assert a.history_ == b.history_
    np.testing.assert_array_equal(a.sample(5, method="ddim", num_inference_steps=5),
                                  b.sample(5, method="ddim", num_inference_steps=5))


def test_latent_diffusion_dit_bad_settings():
    Y = _mixture(16)
    with pytest.raises(ValueError, match="n_tokens must divide"):
        LatentDiffusion(n_tokens=3, **DIT_EST).fit(Y)
    with pytest.raises(ValueError, match="denoiser"):
        LatentDiffusion(denoiser="unet", verbose=False).fit(Y)
    with pytest.raises(ValueError, match="divisible by heads"):
        LatentDiffusion(**{**DIT_EST, "hidden": 30, "heads": 4}).fit(Y)
    with pytest.raises(TypeError, match="n_tokens"):
        LatentDiffusion(n_tokens=2.0, **DIT_EST).fit(Y)
    # settings the MLP does not use are ignored by it
    assert isinstance(LatentDiffusion(n_tokens=3, hidden=8, depth=1, n_steps=2, num_train_timesteps=10,
                                      device="cpu", verbose=False).fit(Y).model_, MLPDenoiser)
