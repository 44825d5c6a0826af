import numpy as np
import pytest
import torch
from sklearn.base import clone

from otgen import NotFittedError
from otgen.autoencoder import ConvAutoencoder, ImageAutoencoder, train_autoencoder
from otgen.latent import LatentSpace


def _bars(n=96, seed=0):
    """Synthetic 28x28 images in [0, 1]: one bright horizontal or vertical bar each."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.float32)
    for i in range(n):
        pos = rng.integers(4, 24)
        if i % 2:
            x[i, pos - 2:pos + 2, 4:24] = 1.0
        else:
            x[i, 4:24, pos - 2:pos + 2] = 1.0
    return x


@pytest.fixture(scope="module")
def fitted():
    return ImageAutoencoder(latent_dim=3, epochs=6, batch_size=16, lr=3e-3, width=8, hidden=32,
                            device="cpu").fit(_bars())


def test_module_shapes():
    torch.manual_seed(0)
    m = ConvAutoencoder(latent_dim=2, width=4, hidden=16)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        z = m.encode(x)
        y = m.decode(z)
    assert z.shape == (5, 2)
    assert y.shape == (5, 1, 28, 28) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_fit_history_and_loss_decreases(fitted):
    h = fitted.history_
    assert len(h["loss"]) == 6 and len(h["time"]) == 6 and len(h["step_loss"]) == 6 * 6
    assert h["loss"][-1] < 0.8 * h["loss"][0]
    assert isinstance(fitted.model_, ConvAutoencoder) and not fitted.model_.training


def test_encode_decode_shapes_and_kinds(fitted):
    x = _bars(10, seed=1)
    z = fitted.encode(x)
    assert isinstance(z, np.ndarray) and z.shape == (10, 3) and z.dtype == np.float32
    zt = fitted.encode(torch.from_numpy(x)[:, None])          # (n, 1, 28, 28) torch in -> torch out
    assert isinstance(zt, torch.Tensor) and zt.shape == (10, 3)
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-5, atol=1e-6)
    img = fitted.decode(z)
    assert img.shape == (10, 28, 28) and img.min() >= 0 and img.max() <= 1
    np.testing.assert_allclose(fitted.reconstruct(x), img, rtol=1e-5, atol=1e-6)
    per = fitted.reconstruction_error(x, per_image=True)
    assert per.shape == (10,)
    assert fitted.reconstruction_error(x) == pytest.approx(float(((img - x) ** 2).mean()), rel=1e-5)


def test_same_seed_same_model():
    x = _bars(32)
    kw = dict(latent_dim=2, epochs=2, batch_size=16, width=4, hidden=16, device="cpu")
    a = ImageAutoencoder(seed=3, **kw).fit(x)
    b = ImageAutoencoder(seed=3, **kw).fit(x)
    c = ImageAutoencoder(seed=4, **kw).fit(x)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    assert not np.array_equal(a.encode(x), c.encode(x))


def test_torch_in_torch_out(fitted):
    x = _bars(6, seed=4)
    xt = torch.from_numpy(x)
    z = fitted.encode(xt)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float32
    for out, ref in ((fitted.decode(z), fitted.decode(z.numpy())), (fitted.reconstruct(xt), fitted.reconstruct(x)),
                     (fitted.reconstruction_error(xt, per_image=True), fitted.reconstruction_error(x, per_image=True))):
        assert isinstance(out, torch.Tensor) and isinstance(ref, np.ndarray)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert isinstance(fitted.reconstruction_error(xt), float)


def test_save_load_round_trip(fitted, tmp_path):
    x = _bars(8, seed=2)
    fitted.save(tmp_path / "ae.pt")
    back = ImageAutoencoder.load(tmp_path / "ae.pt", device="cpu")
    np.testing.assert_array_equal(back.encode(x), fitted.encode(x))
    np.testing.assert_array_equal(back.decode(fitted.encode(x)), fitted.decode(fitted.encode(x)))
    assert back.latent_dim == 3 and back.history_ == fitted.history_
    assert back.get_params() == {**fitted.get_params(), "device": "cpu"}
    assert not back.model_.training
    assert ImageAutoencoder.load(tmp_path / "ae.pt", verbose=True).verbose is True


def test_contract_clone_not_fitted_wrong_file(tmp_path):
    ae = ImageAutoencoder(latent_dim=5, epochs=3, seed=7)
    twin = clone(ae)
    assert twin.get_params() == ae.get_params() and twin is not ae
    assert repr(ae) == "ImageAutoencoder(latent_dim=5, epochs=3, seed=7)" and ae.verbose is False
    for call in (lambda: ae.encode(_bars(2)), lambda: ae.decode(np.zeros((2, 5))), lambda: ae.reconstruct(_bars(2)),
                 lambda: ae.reconstruction_error(_bars(2)), lambda: ae.save(tmp_path / "ae.pt")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    LatentSpace().fit(np.zeros((3, 2))).save(tmp_path / "space.pt")
    with pytest.raises(ValueError, match="holds a LatentSpace, not a ImageAutoencoder"):
        ImageAutoencoder.load(tmp_path / "space.pt")


def test_training_loop_is_generic():
    class Flat(torch.nn.Module):  # any input shape: (n, 2, 3, 4) "videos"
        def __init__(self):
            super().__init__()
            self.e, self.d = torch.nn.Linear(24, 4), torch.nn.Linear(4, 24)

        def encode(self, x):
            return self.e(x.flatten(1))

        def decode(self, z):
            return self.d(z).view(-1, 2, 3, 4)

    torch.manual_seed(0)
    data = torch.randn(64, 4) @ torch.randn(4, 24)
    h = train_autoencoder(Flat(), data.view(64, 2, 3, 4), epochs=50, batch_size=16, lr=2e-2, loss="mse",
                          device="cpu", verbose=False)
    assert h["loss"][-1] < 0.2 * h["loss"][0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_autoencoder(Flat(), data.view(64, 2, 3, 4), loss="bce", device="cpu", verbose=False)
    with pytest.raises(TypeError, match="encode and decode"):
        train_autoencoder(torch.nn.Linear(2, 2), data, device="cpu", verbose=False)


def test_bad_inputs(fitted):
    ae = ImageAutoencoder(device="cpu")
    with pytest.raises(NotFittedError, match="not fitted"):
        ae.encode(_bars(2))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        ae.fit(np.zeros((4, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ae.fit(np.full((4, 28, 28), 2.0))
    with pytest.raises(TypeError, match="uint8"):
        ae.fit(np.zeros((4, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        ae.fit(np.full((4, 28, 28), np.nan))
    with pytest.raises(ValueError, match=r"codes must have shape \(n, 3\)"):
        fitted.decode(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="epochs"):
        ImageAutoencoder(epochs=0, device="cpu").fit(_bars(4))
    with pytest.raises(ValueError, match="loss"):
        ImageAutoencoder(loss="l1", device="cpu").fit(_bars(4))
    with pytest.raises(TypeError, match="seed"):
        ImageAutoencoder(seed=0.5, device="cpu").fit(_bars(4))


@pytest.mark.slow
def test_reconstruction_on_embedded_mnist():
    from otgen.data.mnist import load_mnist
    xtr, _ = load_mnist("train")
    xte, _ = load_mnist("test")
    ae = ImageAutoencoder(latent_dim=8, device="cpu").fit(xtr)
    assert ae.reconstruction_error(xte) < 0.025       # measured 0.0197 with seed 0
    assert ae.history_["loss"][-1] < ae.history_["loss"][0]


def test_augment_setting_trains_and_changes_the_model():
    x = _bars(32)
    kw = dict(latent_dim=2, epochs=2, batch_size=16, width=4, hidden=16, device="cpu")
    a = ImageAutoencoder(augment=True, **kw).fit(x)
    b = ImageAutoencoder(**kw).fit(x)
    assert len(a.history_["loss"]) == 2 and not np.array_equal(a.encode(x), b.encode(x))
    np.testing.assert_array_equal(ImageAutoencoder(augment=True, **kw).fit(x).encode(x), a.encode(x))


def test_labelled_control_separates_labels(tmp_path):
    """label_weight > 0 (labelled control): a linear head on the code reads the labels."""
    x = _bars(64)
    y = np.arange(64) % 2                        # horizontal (1) / vertical (0), as built by _bars
    kw = dict(latent_dim=2, epochs=15, batch_size=16, width=8, hidden=32, lr=3e-3, device="cpu")
    with pytest.raises(ValueError, match="labels"):
        ImageAutoencoder(label_weight=1.0, **kw).fit(x)
    ae = ImageAutoencoder(label_weight=1.0, **kw).fit(x, y)
    logits = ae.model_.classify(torch.from_numpy(ae.encode(x)))
    assert float((logits.argmax(1).numpy() == y).mean()) >= 0.9
    ae.save(tmp_path / "lab.pt")
    back = ImageAutoencoder.load(tmp_path / "lab.pt")
    np.testing.assert_allclose(back.encode(x), ae.encode(x), atol=1e-6)
    assert not hasattr(ImageAutoencoder(**dict(kw, epochs=1)).fit(x, y).model_, "head")   # labels ignored


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormal floats")
def test_train_autoencoder_flushes_subnormals_while_it_runs():
    from otgen._base import denormals_flushed
    seen, before = [], denormals_flushed()

    def augment(x, generator):                 # called inside the loop, on every mini-batch
        seen.append(denormals_flushed())
        return x

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def encode(self, x):
            return self.lin(x)

        def decode(self, z):
            return z

    train_autoencoder(Flat(), torch.rand(16, 4), epochs=2, batch_size=8, loss="mse", device="cpu", augment=augment)
    assert seen and all(seen) and denormals_flushed() == before
