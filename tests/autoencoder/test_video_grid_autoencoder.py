"""GridVideoAutoencoder: a latent video (T', C', H', W') per clip, shapes, learning, files, checks."""

import numpy as np
import pytest
import torch

from otgen.autoencoder.video_grid import ConvGridAutoencoder, GridVideoAutoencoder
from otgen.data.video import bistable
from otgen.tokens import patchify


@pytest.fixture(scope="module")
def clips():
    return bistable(64, n_frames=12, size=16, seed=3, transition_rate=0.5)[0]


@pytest.fixture(scope="module")
def fitted(clips):
    torch.set_num_threads(1)
    return GridVideoAutoencoder(tubelet=(2, 4, 4), channels=2, width=8, epochs=40, batch_size=16, lr=1e-2,
                                device="cpu", seed=0).fit(clips)


def test_module_shapes():
    m = ConvGridAutoencoder((8, 1, 16, 16), tubelet=(2, 4, 4), channels=3, width=8)
    x = torch.rand(2, 8, 1, 16, 16)
    z = m.encode(x)
    assert z.shape == (2, 4, 3, 4, 4) and m.latent_shape == (4, 3, 4, 4) and m.latent_dim == 192
    y = m.decode(z)
    assert y.shape == x.shape and float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1


def test_latent_cell_sees_only_its_neighbourhood():
    """Changing one pixel changes only the latent cells within one residual block's reach (3 x 3 x 3 cells)."""
    torch.manual_seed(0)
    m = ConvGridAutoencoder((8, 1, 16, 16), tubelet=(2, 4, 4), channels=2, width=8, depth=1)
    x = torch.zeros(1, 8, 1, 16, 16)
    y = x.clone()
    y[0, 0, 0, 0, 0] = 1.0                                  # in latent cell (0, 0, 0)
    with torch.no_grad():
        diff = (m.encode(x) - m.encode(y)).abs().sum(2)[0]   # (T', H', W')
    changed = np.argwhere(diff.numpy() > 0)
    assert changed.max(0).tolist() == [2, 2, 2]             # one residual block: 2 convs of radius 1
    assert len(changed) > 1


def test_it_learns(fitted, clips):
    loss = fitted.history_["loss"]
    assert loss[-1] < 0.5 * loss[0]
    mean_clip = float(((clips - clips.mean(0)) ** 2).mean())
    assert fitted.reconstruction_error(clips) < mean_clip


def test_codes_are_latent_videos_that_patchify_reads(fitted, clips):
    z = fitted.encode(clips.numpy())
    assert isinstance(z, np.ndarray) and z.shape == (64, fitted.latent_dim_) == (64, 6 * 2 * 4 * 4)
    assert fitted.latent_shape_ == (6, 2, 4, 4)
    video = z.reshape(-1, *fitted.latent_shape_)
    assert patchify(video, (2, 2, 2)).shape == (64, 12, 16)
    a = fitted.decode(z)
    b = fitted.decode(video)
    assert a.shape == clips.shape and np.allclose(a, b)
    assert isinstance(fitted.decode(torch.from_numpy(z)), torch.Tensor)
    assert np.allclose(fitted.reconstruct(clips.numpy()), a, atol=1e-6)


def test_same_seed_same_model(clips):
    kw = dict(tubelet=(2, 4, 4), channels=2, width=8, epochs=1, batch_size=16, device="cpu")
    a = GridVideoAutoencoder(seed=1, **kw).fit(clips[:32]).encode(clips[:4])
    b = GridVideoAutoencoder(seed=1, **kw).fit(clips[:32]).encode(clips[:4])
    c = GridVideoAutoencoder(seed=2, **kw).fit(clips[:32]).encode(clips[:4])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_load_round_trip(fitted, clips, tmp_path):
    fitted.save(tmp_path / "ae.pt")
    back = GridVideoAutoencoder.load(tmp_path / "ae.pt")
    assert back.latent_shape_ == fitted.latent_shape_ and back.channels == fitted.channels
    assert torch.equal(back.encode(clips[:4]), fitted.encode(clips[:4]))


def test_bad_inputs(fitted, clips):
    with pytest.raises(ValueError, match="shape"):
        fitted.decode(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fitted.encode(clips[:2] * 2)
    with pytest.raises(ValueError, match="divide|divisible"):
        GridVideoAutoencoder(tubelet=(5, 4, 4), epochs=1).fit(clips[:4])
    with pytest.raises(ValueError, match="symmetry"):
        GridVideoAutoencoder(symmetries=("spin",), epochs=1).fit(clips[:4])


def test_latent_noise_normalises_the_codes_and_is_seeded():
    """latent_noise > 0: each code has zero mean and unit RMS; the same seed gives the same model."""
    clips = torch.rand(12, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(tubelet=(2, 4, 4), channels=2, width=8, epochs=2, batch_size=4, latent_noise=0.5, device="cpu")
    a = GridVideoAutoencoder(**kw, seed=3).fit(clips)
    z = torch.as_tensor(a.encode(clips))
    torch.testing.assert_close(z.mean(1), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.pow(2).mean(1), torch.ones(12), atol=5e-3, rtol=0)   # layer norm eps: var / (var + eps)
    b = GridVideoAutoencoder(**kw, seed=3).fit(clips)
    torch.testing.assert_close(torch.as_tensor(b.encode(clips)), z)
    plain = GridVideoAutoencoder(**dict(kw, latent_noise=0.0), seed=3).fit(clips)
    assert not torch.allclose(torch.as_tensor(plain.encode(clips)).pow(2).mean(1), torch.ones(12), atol=1e-2)
    with pytest.raises(ValueError, match="latent_noise"):
        GridVideoAutoencoder(**dict(kw, latent_noise=-1.0)).fit(clips)


def test_training_noise_reaches_the_decoder():
    """train_autoencoder(latent_noise=s) decodes E(x) + s * eps: with a huge s the decoder cannot read the code."""
    from otgen.autoencoder.training import train_autoencoder
    from otgen.autoencoder.video_grid import ConvGridAutoencoder

    clips = torch.rand(16, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    losses = {}
    for s in (0.0, 100.0):
        torch.manual_seed(0)
        model = ConvGridAutoencoder((4, 1, 8, 8), (2, 4, 4), channels=2, width=8, normalize=True)
        losses[s] = train_autoencoder(model, clips, epochs=30, batch_size=16, seed=0, latent_noise=s)["loss"][-1]
    assert losses[100.0] > losses[0.0] + 0.01
