"""MLP denoiser and sinusoidal time embedding."""

import pytest
import torch

from otgen.diffusion import MLPDenoiser, sinusoidal_embedding


def test_sinusoidal_embedding_values():
    t = torch.tensor([0, 1, 500])
    e = sinusoidal_embedding(t, 8)
    assert e.shape == (3, 8) and e.dtype == torch.float32
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = 10000.0 ** (-torch.arange(4) / 4)
    assert torch.allclose(e[2], torch.cat([torch.cos(500 * freqs), torch.sin(500 * freqs)]), atol=1e-5)
    # odd sizes are zero-padded; every row has unit norm per (cos, sin) pair
    e5 = sinusoidal_embedding(t, 5)
    assert e5.shape == (3, 5) and torch.equal(e5[:, -1], torch.zeros(3))
    assert torch.allclose((e[:, :4] ** 2 + e[:, 4:] ** 2), torch.ones(3, 4), atol=1e-6)


def test_mlp_denoiser_shapes_and_timestep_forms():
    torch.manual_seed(0)
    net = MLPDenoiser(5, hidden=32, depth=2, time_embed_dim=16)
    x = torch.randn(7, 5)
    t = torch.full((7,), 123)
    out = net(x, t)
    assert out.shape == (7, 5) and out.dtype == torch.float32
    assert torch.equal(net(x, 123), out)                    # scalar timestep broadcasts
    assert not torch.allclose(net(x, 900), out)             # the output depends on t
    assert net.config == dict(dim=5, hidden=32, depth=2, time_embed_dim=16)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_mlp_denoiser_rows_are_independent():
    """Each row's output depends only on that row (no batch coupling), float64 works."""
    torch.manual_seed(1)
    net = MLPDenoiser(3, hidden=16, depth=1, time_embed_dim=8).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.tensor([0, 5, 10, 500, 998, 999])
    full = net(x, t)
    for i in range(6):
        assert torch.allclose(net(x[i:i + 1], t[i:i + 1]), full[i:i + 1], atol=1e-12)


def test_mlp_denoiser_bad_inputs():
    net = MLPDenoiser(4, hidden=8, depth=1, time_embed_dim=4)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        net(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        net(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        net([[0.0] * 4], 1)
    with pytest.raises(TypeError, match="dim"):
        MLPDenoiser(2.5)
    with pytest.raises(ValueError, match="depth"):
        MLPDenoiser(2, depth=0)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        sinusoidal_embedding(torch.zeros(2, 2), 4)
