"""The latent space that every generator reads and writes: standardised codes.

An autoencoder's codes :math:`y \\in \\mathbb R^d` have coordinates of very different
scales. Every generator of otgen (semi-discrete OT, latent diffusion, the Gaussian
baseline) works on the standardised codes

.. math::  z = (y - m) / s, \\qquad y = m + s\\, z,

with :math:`m` and :math:`s` the per-coordinate mean and standard deviation of the
training codes (a zero deviation is replaced by 1). The OT source (the uniform cube
:math:`[-1, 1]^d`) is isotropic, so standardising puts every latent direction on the
same footing; latent diffusion standardises for the same reason (unit-variance data
for the noise schedule) [1]_. One fitted :class:`LatentSpace` is shared by all the
generators of a comparison, so they take codes in and give codes out in the same way
and their samples can be scored in one standardised space.

References
----------
.. [1] R. Rombach, A. Blattmann, D. Lorenz, P. Esser, B. Ommer, "High-resolution image
   synthesis with latent diffusion models", CVPR 2022.
"""

from __future__ import annotations

import numpy as np
import torch

from otgen._base import BaseEstimator, like_input
from otgen._validation import as_tensor

__all__ = ["LatentSpace"]

_MIN_SCALE = 1e-12     # a coordinate with smaller spread is constant: divide by 1, not by ~0


class LatentSpace(BaseEstimator):
    """Per-coordinate standardisation of latent codes and its inverse.

    Parameters
    ----------
    standardize : bool, default True
        ``False`` makes the space the identity (``mean_ = 0``, ``scale_ = 1``), for codes
        that are already standardised.

    Attributes
    ----------
    mean_ : ndarray of float64, shape (d,)
    scale_ : ndarray of float64, shape (d,)
        Standard deviation of each coordinate (1 where it is below 1e-12).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> codes = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4))
    >>> space = LatentSpace().fit(codes)
    >>> z = space.transform(codes)                    # mean 0, std 1 per coordinate
    >>> bool(np.allclose(space.inverse_transform(z), codes, atol=1e-5))
    True
    """

    _FITTED_ATTR = "mean_"

    def __init__(self, standardize: bool = True):
        self.standardize = standardize

    def fit(self, codes) -> "LatentSpace":
        """Learn the mean and standard deviation of ``codes`` (n, d), n >= 1."""
        if not isinstance(self.standardize, bool):
            raise TypeError(f"standardize must be True or False, got {self.standardize!r}")
        y = as_tensor(codes, "codes", ndim=2, dtype=torch.float64).cpu().numpy()
        if self.standardize:
            mean, scale = y.mean(0), y.std(0)
            scale = np.where(scale > _MIN_SCALE, scale, 1.0)
        else:
            mean, scale = np.zeros(y.shape[1]), np.ones(y.shape[1])
        self.mean_, self.scale_, self.n_features_in_ = mean, scale, int(y.shape[1])
        return self

    def _check(self, x, name):
        self._check_fitted()
        t = as_tensor(x, name, ndim=2, dtype=torch.float64)
        if t.shape[1] != self.n_features_in_:
            raise ValueError(f"{name} must have {self.n_features_in_} columns (the fitted codes' dimension), "
                             f"got shape {tuple(t.shape)}")
        return t

    def _out(self, t, ref):
        """float32 for the caller unless it gave float64 (numpy in -> numpy out, torch in -> torch out)."""
        keep64 = getattr(ref, "dtype", None) in (np.float64, torch.float64)
        t = t if keep64 else t.float()
        if isinstance(ref, torch.Tensor):
            return t.to(ref.device)
        return like_input(t, ref)

    def transform(self, codes):
        """Codes (n, d) -> standardised codes :math:`z = (y - m) / s` (n, d)."""
        y = self._check(codes, "codes")
        m, s = torch.from_numpy(self.mean_), torch.from_numpy(self.scale_)
        return self._out((y.cpu() - m) / s, codes)

    def inverse_transform(self, z):
        """Standardised codes (n, d) -> codes :math:`y = m + s z` (n, d)."""
        t = self._check(z, "z")
        m, s = torch.from_numpy(self.mean_), torch.from_numpy(self.scale_)
        return self._out(t.cpu() * s + m, z)

    def _get_state(self) -> dict:
        return {"mean": self.mean_, "scale": self.scale_}

    def _set_state(self, state: dict, device=None) -> None:
        self.mean_ = np.asarray(state["mean"], np.float64)
        self.scale_ = np.asarray(state["scale"], np.float64)
        self.n_features_in_ = int(self.mean_.shape[0])
