"""LatentSpace: standardisation and its inverse, numpy in -> numpy out, torch in -> torch out."""

import numpy as np
import pytest
import sklearn.base
import torch

from otgen import NotFittedError
from otgen.latent import LatentSpace


def test_standardises_and_inverts(rng):
    codes = rng.normal([3.0, -1.0, 0.0], [2.0, 0.5, 1e-15], size=(400, 3))
    space = LatentSpace().fit(codes)
    z = space.transform(codes)
    assert isinstance(z, np.ndarray) and z.dtype == np.float64
    assert np.allclose(z[:, :2].mean(0), 0, atol=1e-12) and np.allclose(z[:, :2].std(0), 1)
    assert space.scale_[2] == 1.0                                      # a constant coordinate is not blown up
    assert np.allclose(space.inverse_transform(z), codes)
    z32 = space.transform(codes.astype(np.float32))
    assert z32.dtype == np.float32


def test_torch_in_torch_out(rng):
    codes = torch.tensor(rng.normal(size=(50, 2)), dtype=torch.float32)
    space = LatentSpace().fit(codes)
    z = space.transform(codes)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float32
    assert torch.allclose(space.inverse_transform(z), codes, atol=1e-5)


def test_identity_and_errors(rng, tmp_path):
    codes = rng.normal(size=(20, 2))
    assert np.allclose(LatentSpace(standardize=False).fit(codes).transform(codes), codes)
    with pytest.raises(NotFittedError):
        LatentSpace().transform(codes)
    space = LatentSpace().fit(codes)
    with pytest.raises(ValueError, match="2 columns"):
        space.transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        LatentSpace().fit(np.full((3, 2), np.nan))
    with pytest.raises(TypeError, match="standardize"):
        LatentSpace(standardize="yes").fit(codes)
    space.save(tmp_path / "l.pt")
    assert np.allclose(LatentSpace.load(tmp_path / "l.pt").transform(codes), space.transform(codes))
    assert sklearn.base.clone(space).get_params() == {"standardize": True}
