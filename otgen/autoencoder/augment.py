r"""Digit augmentations: small random affine maps and elastic deformations.

:func:`augment_digits` warps each image of a batch ``(n, 1, 28, 28)`` by

.. math::

    \tilde x(u) = x\big(A u + t + \delta(u)\big),

with :math:`A` a random rotation x scale x shear, :math:`t` a random shift and
:math:`\delta` an elastic displacement field: i.i.d. uniform noise in :math:`[-1, 1]`
per pixel and axis, smoothed by a Gaussian of width :math:`\sigma` and scaled by
:math:`\alpha` (Simard, Steinkraus & Platt [1]_). Values are read with bilinear
interpolation (zero outside the image), so the output stays in [0, 1]. ``strength``
scales every deformation at once: ``strength=0`` is the identity.

These deformations are close to symmetries of handwriting (the same digit written a
little rotated, slanted, wider, or with a wobblier stroke), so training on them adds
digits that could have been drawn, which is what an autoencoder fitted to 4,000 digits
lacks.

References
----------
.. [1] P. Y. Simard, D. Steinkraus, J. C. Platt, "Best practices for convolutional
   neural networks applied to visual document analysis", ICDAR 2003.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from otgen._validation import check_positive_float

__all__ = ["augment_digits", "ROTATION_DEG", "SCALE", "SHEAR", "SHIFT_PX", "ELASTIC_ALPHA", "ELASTIC_SIGMA"]

ROTATION_DEG = 12.0    # largest rotation: handwriting slant varies by about +-10 deg within a digit class
SCALE = 0.1            # largest relative zoom: MNIST digits are size-normalised to a 20 px box, so stay near 1
SHEAR = 0.15           # largest horizontal shear (slant), a dominant writer-to-writer variation
SHIFT_PX = 1.5         # largest shift in pixels: digits are centred by mass, so only a small jitter is natural
ELASTIC_ALPHA = 24.0   # elastic field scale (px): about 1 px RMS displacement, milder than Simard's 34
ELASTIC_SIGMA = 4.0    # elastic field smoothness (px): Simard et al.'s value, a smooth stroke wobble


def _gaussian_band(size: int, sigma: float, dtype, device) -> torch.Tensor:
    """(size, size) matrix of a 1-D Gaussian blur of std ``sigma`` pixels, truncated at 3 sigma, zero padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()                                                     # (2 radius + 1,) taps
    offset = torch.arange(size, device=device)[None, :] - torch.arange(size, device=device)[:, None]  # j - i
    inside = offset.abs() <= radius
    return torch.where(inside, k[(offset + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=dtype, device=device))


def _gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``field`` (n, c, h, w) with std ``sigma`` pixels (zero padding).

    The blur along each axis is a banded (Toeplitz) matrix, so the 2-D blur is
    ``B_h @ field @ B_w^T``: two small batched GEMMs, several times faster on CPU than the
    grouped convolution with the same taps (the same numbers to float rounding).
    """
    _, _, h, w = field.shape
    rows = _gaussian_band(h, sigma, field.dtype, field.device)          # (h, h)
    cols = _gaussian_band(w, sigma, field.dtype, field.device)          # (w, w)
    return rows @ field @ cols.T


def _uniform(n: int, half_width: float, gen: torch.Generator) -> torch.Tensor:
    """(n,) float32 uniform in [-half_width, half_width] from the CPU generator ``gen``."""
    return (torch.rand(n, generator=gen) * 2 - 1) * half_width


def _affine_matrices(n: int, size: int, strength: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) random affine maps in ``affine_grid``'s normalised coordinates ([-1, 1] across the image)."""
    angle = _uniform(n, math.radians(ROTATION_DEG) * strength, gen)
    scale = 1 + _uniform(n, SCALE * strength, gen)
    shear = _uniform(n, SHEAR * strength, gen)
    shift = torch.stack([_uniform(n, SHIFT_PX * strength, gen), _uniform(n, SHIFT_PX * strength, gen)], 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)    # (n, 2, 2)
    shr = torch.eye(2).repeat(n, 1, 1)
    shr[:, 0, 1] = shear
    lin = rot @ shr / scale[:, None, None]                                            # sampling map: inverse zoom
    return torch.cat([lin, (shift * 2 / size)[:, :, None]], dim=2)                    # (n, 2, 3)


def augment_digits(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0,
                   elastic: bool = True) -> torch.Tensor:
    r"""Randomly deform a batch of digit images (affine then elastic, one bilinear resampling).

    Parameters
    ----------
    x : torch.Tensor of shape (n, 1, H, W)
        Images with values in [0, 1], on any device.
    generator : torch.Generator
        CPU generator all random draws come from (the same state gives the same output).
    strength : float, default 1.0
        Multiplies every deformation range (``ROTATION_DEG``, ``SCALE``, ``SHEAR``,
        ``SHIFT_PX``, ``ELASTIC_ALPHA``); ``0`` returns ``x`` unchanged (to float precision).
    elastic : bool, default True
        Add the elastic displacement field :math:`\alpha\, G_\sigma * U[-1, 1]`.

    Returns
    -------
    torch.Tensor of shape (n, 1, H, W)
        Deformed images in [0, 1], on ``x``'s device.
    """
    strength = check_positive_float(strength, "strength", allow_zero=True)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x must have shape (n, 1, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    theta = _affine_matrices(n, w, strength, generator)                    # (n, 2, 3)
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)        # (n, h, w, 2) in [-1, 1]
    if elastic:
        noise = torch.rand(n, 2, h, w, generator=generator) * 2 - 1         # (n, 2, h, w)
        disp = _gaussian_smooth(noise, ELASTIC_SIGMA) * (ELASTIC_ALPHA * strength)  # pixels
        grid = grid + disp.permute(0, 2, 3, 1) * (2.0 / torch.tensor([w, h], dtype=disp.dtype))
    out = F.grid_sample(x, grid.to(device=x.device, dtype=x.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.clamp_(0.0, 1.0)
