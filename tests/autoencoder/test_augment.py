import math

import pytest
import torch
import torch.nn.functional as F

from otgen.autoencoder.augment import augment_digits


def _digits(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = torch.rand(n, 1, 12, 4, generator=g)
    return x


def test_zero_strength_is_identity():
    x = _digits()
    out = augment_digits(x, torch.Generator().manual_seed(0), strength=0.0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_shape_range_and_change():
    x = _digits(8)
    out = augment_digits(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().mean()) > 1e-3                 # something moved
    assert abs(float(out.sum() - x.sum())) < 0.3 * float(x.sum())  # ink roughly kept (small deformations)


def test_same_generator_state_same_output():
    x = _digits()
    a = augment_digits(x, torch.Generator().manual_seed(5))
    b = augment_digits(x, torch.Generator().manual_seed(5))
    c = augment_digits(x, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)


def test_affine_only_and_bad_shape():
    x = _digits()
    out = augment_digits(x, torch.Generator().manual_seed(0), elastic=False)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="shape"):
        augment_digits(x[:, 0], torch.Generator())
    with pytest.raises(ValueError):
        augment_digits(x, torch.Generator(), strength=-1.0)


@pytest.mark.parametrize("sigma", [0.7, 4.0, 12.0])
def test_smoothing_matches_the_separable_convolution(sigma):
    """The banded-matrix blur equals the zero-padded separable convolution with the same truncated taps."""
    from otgen.autoencoder.augment import _gaussian_smooth

    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    field = torch.rand(3, 2, 28, 31, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    ref = F.conv2d(field, k.view(1, 1, 1, -1).expand(2, 1, 1, -1), padding=(0, radius), groups=2)
    ref = F.conv2d(ref, k.view(1, 1, -1, 1).expand(2, 1, -1, 1), padding=(radius, 0), groups=2)
    torch.testing.assert_close(_gaussian_smooth(field, sigma), ref, rtol=0, atol=1e-12)
