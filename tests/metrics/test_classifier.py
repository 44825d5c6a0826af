import numpy as np
import pytest
import torch
from sklearn.base import clone

from otgen import NotFittedError
from otgen.latent import LatentSpace
from otgen.metrics import MNISTClassifier, frechet_distance
from otgen.metrics.classifier import _random_shift


def _blocks(n=120, seed=0):
    """Synthetic labelled 28x28 images: class c = a bright 6x6 block in cell c of a 3x4 grid (classes 0..9)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = 0.1 * rng.random((n, 28, 28)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = 1 + 9 * (c // 4), 1 + 7 * (c % 4)
        x[i, r:r + 6, col:col + 6] = 1.0
    return x, y


@pytest.fixture(scope="module")
def fitted():
    x, y = _blocks()
    return MNISTClassifier(epochs=4, batch_size=20, lr=3e-3, max_shift=1, feature_dim=16, device="cpu").fit(x, y)


def test_fit_history_and_loss_decreases(fitted):
    h = fitted.history_
    assert len(h["loss"]) == 4 and len(h["accuracy"]) == 4 and len(h["step_loss"]) == 4 * 6
    assert h["loss"][-1] < 0.5 * h["loss"][0]


def test_outputs(fitted):
    x, y = _blocks(30, seed=1)
    p = fitted.predict_proba(x)
    assert isinstance(p, np.ndarray) and p.shape == (30, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    pred = fitted.predict(x)
    assert pred.shape == (30,) and pred.dtype == np.int64
    np.testing.assert_array_equal(pred, p.argmax(1))
    assert fitted.score(x, y) == pytest.approx(np.mean(pred == y))
    assert fitted.score(x, y) >= 0.9                 # the blocks are easy
    f = fitted.features(x)
    assert f.shape == (30, 16) and f.min() >= 0      # post-ReLU
    ft = fitted.features(torch.from_numpy(x)[:, None])
    assert isinstance(ft, torch.Tensor)
    np.testing.assert_allclose(ft.numpy(), f, rtol=1e-5, atol=1e-6)
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)


def test_one_pass_outputs_equal_the_two_calls(fitted):
    x, _ = _blocks(1100, seed=2)          # more than one batch of the network
    p, f = fitted.outputs(x)
    np.testing.assert_allclose(p, fitted.predict_proba(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f, fitted.features(x), rtol=1e-5, atol=1e-6)
    pt, ft = fitted.outputs(torch.from_numpy(x))
    assert isinstance(pt, torch.Tensor) and isinstance(ft, torch.Tensor) and ft.shape == (1100, 16)


def test_torch_in_torch_out(fitted):
    x, _ = _blocks(8, seed=4)
    xt = torch.from_numpy(x)
    for name in ("predict_proba", "predict", "features"):
        out, ref = getattr(fitted, name)(xt), getattr(fitted, name)(x)
        assert isinstance(out, torch.Tensor) and isinstance(ref, np.ndarray), name
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert fitted.predict(xt).dtype == torch.int64


def test_save_load_round_trip(fitted, tmp_path):
    x, _ = _blocks(12, seed=2)
    fitted.save(tmp_path / "clf.pt")
    back = MNISTClassifier.load(tmp_path / "clf.pt", device="cpu")
    np.testing.assert_array_equal(back.predict_proba(x), fitted.predict_proba(x))
    np.testing.assert_array_equal(back.features(x), fitted.features(x))
    assert back.feature_dim == 16 and back.history_ == fitted.history_
    assert back.get_params() == fitted.get_params() and not back.model_.training


def test_contract_clone_not_fitted_wrong_file(tmp_path):
    clf = MNISTClassifier(epochs=2, max_shift=0, seed=4)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    assert repr(clf) == "MNISTClassifier(epochs=2, max_shift=0, seed=4)" and clf.verbose is False
    x, y = _blocks(4)
    for call in (lambda: clf.predict(x), lambda: clf.predict_proba(x), lambda: clf.features(x),
                 lambda: clf.score(x, y), lambda: clf.save(tmp_path / "clf.pt")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    LatentSpace().fit(np.zeros((3, 2))).save(tmp_path / "space.pt")
    with pytest.raises(ValueError, match="holds a LatentSpace, not a MNISTClassifier"):
        MNISTClassifier.load(tmp_path / "space.pt")


def test_reproducible():
    x, y = _blocks(40)
    kw = dict(epochs=1, batch_size=20, feature_dim=8, device="cpu")
    a = MNISTClassifier(seed=1, **kw).fit(x, y).predict_proba(x)
    b = MNISTClassifier(seed=1, **kw).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)


def test_random_shift():
    x = torch.zeros(3, 1, 28, 28)
    x[:, 0, 10, 12] = 1.0
    gen = torch.Generator().manual_seed(0)
    s = _random_shift(x, 2, gen)
    assert s.shape == x.shape
    for img in s[:, 0]:
        assert float(img.sum()) == 1.0            # a small shift keeps the pixel inside
        r, c = map(int, torch.nonzero(img)[0])
        assert abs(r - 10) <= 2 and abs(c - 12) <= 2
    assert torch.equal(_random_shift(x, 0, gen), x)


def test_bad_inputs(fitted):
    x, y = _blocks(10)
    clf = MNISTClassifier(device="cpu")
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(x)
    with pytest.raises(ValueError, match="length 10"):
        clf.fit(x, y[:5])
    with pytest.raises(ValueError, match="integers"):
        clf.fit(x, np.full(10, 10))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        fitted.predict(np.zeros((2, 3, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="max_shift"):
        MNISTClassifier(max_shift=-1, device="cpu").fit(x, y)
    with pytest.raises(TypeError, match="seed"):
        MNISTClassifier(seed="0", device="cpu").fit(x, y)


@pytest.mark.slow
def test_accuracy_on_embedded_mnist():
    from otgen.data.mnist import load_mnist
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    clf = MNISTClassifier(device="cpu").fit(xtr, ytr)
    assert clf.score(xte, yte) >= 0.97


def test_digit_metrics(fitted):
    from otgen.metrics import digit_metrics
    x, _ = _blocks(40, seed=3)
    same = digit_metrics(fitted, x, x, k=3, device="cpu")
    assert set(same) == {"mode_mixture", "low_confidence", "class_histogram", "class_kl", "fid",
                         "precision", "recall", "density", "coverage"}
    assert same["class_kl"] == pytest.approx(0.0, abs=1e-12) and same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert sum(same["class_histogram"]) == pytest.approx(1.0)
    # a collapsed generator (always class 0) is caught by the class KL and the recall
    collapsed = digit_metrics(fitted, torch.from_numpy(x[::10]), x, k=3, device="cpu")
    assert collapsed["class_kl"] > 1.0 and collapsed["recall"] < 0.5
    with pytest.raises(TypeError, match="MNISTClassifier"):
        digit_metrics(object(), x, x)


def test_digit_metrics_with_the_real_outputs_computed_once(fitted):
    """Passing classifier_outputs(real) gives exactly the scores computed from the real images."""
    from otgen.metrics import classifier_outputs, digit_metrics
    x, _ = _blocks(40, seed=3)
    fake = x[::3]
    real = classifier_outputs(fitted, x)
    assert real[0].shape == (len(x), 10) and real[1].shape[0] == len(x)
    assert digit_metrics(fitted, fake, None, k=3, device="cpu", real_outputs=real) == \
        digit_metrics(fitted, fake, x, k=3, device="cpu")
    with pytest.raises(ValueError, match="same images"):
        digit_metrics(fitted, fake, None, k=3, real_outputs=(real[0], real[1][:5]))
    with pytest.raises(TypeError, match="MNISTClassifier"):
        classifier_outputs(object(), x)
    with pytest.raises(TypeError, match="pair"):
        digit_metrics(fitted, fake, None, k=3, real_outputs=real[0])


def test_digit_metrics_with_the_fake_outputs_computed_once(fitted):
    """Passing classifier_outputs(fake) gives exactly the scores computed from the fake images."""
    from otgen.metrics import classifier_outputs, digit_metrics
    x, _ = _blocks(40, seed=4)
    fake = x[::3]
    outputs = classifier_outputs(fitted, fake)
    assert digit_metrics(fitted, None, x, k=3, device="cpu", fake_outputs=outputs) == \
        digit_metrics(fitted, fake, x, k=3, device="cpu")
    with pytest.raises(ValueError, match="fake_outputs must be"):
        digit_metrics(fitted, None, x, k=3, fake_outputs=(outputs[0][:2], outputs[1]))
    with pytest.raises(TypeError, match="fake_outputs must be the pair"):
        digit_metrics(fitted, None, x, k=3, fake_outputs=outputs[1])



def test_load_rejects_a_file_that_is_not_a_saved_model(tmp_path):
    import torch
    from otgen.autoencoder import ImageAutoencoder
    from otgen.metrics import MNISTClassifier
    torch.save({"something": 1}, tmp_path / "other.pt")
    for cls in (MNISTClassifier, ImageAutoencoder):
        with pytest.raises(ValueError, match="not a file written by an otgen estimator's save"):
            cls.load(tmp_path / "other.pt")
