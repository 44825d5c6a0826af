"""Space-time patches: cut video clips into tokens and put them back together.

A clip of shape (T, C, H, W) is cut into non-overlapping *tubelets* of
``t`` frames × ``p`` rows × ``q`` columns; each tubelet is flattened into one
token of length ``P = t C p q``. This is the "spacetime patch" representation of
video transformers (Sora; ViViT's tubelet embedding), here without the linear
projection, which belongs to the model.

Conventions
-----------
* Tokens are ordered frame-block major, then row-block, then column-block: the
  token of block ``(ti, hi, wi)`` has index ``(ti * nH + hi) * nW + wi`` where
  ``(nT, nH, nW) = (T/t, H/p, W/q)`` (see :func:`token_grid`).
* Inside a token the values are ordered ``(dt, c, dy, dx)`` in C order.
* ``tubelet`` is an int ``p`` (meaning ``(1, p, p)``, per-frame square patches)
  or a 3-tuple ``(t, p, q)``.

Every function is a pure reshape / permute: no copy beyond what ``reshape``
needs, no loop, any device, dtype kept, and gradients flow through.

References
----------
A. Arnab, M. Dehghani, G. Heigold, C. Sun, M. Lučić and C. Schmid, "ViViT: A Video
Vision Transformer", ICCV 2021 (tubelet embedding).
T. Brooks, B. Peebles et al., "Video generation models as world simulators",
OpenAI technical report, 2024 (spacetime patches).
A. Vaswani et al., "Attention is all you need", NeurIPS 2017 (sinusoidal positions).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from otgen._validation import check_positive_float, check_positive_int

__all__ = ["patchify", "unpatchify", "token_grid", "token_positions", "positional_embedding"]

_AXES = ("T (frames)", "H (rows)", "W (columns)")


# --------------------------------------------------------------------------- argument checks

def _check_tubelet(tubelet) -> tuple[int, int, int]:
    """int p -> (1, p, p); 3-tuple of positive ints -> itself."""
    if isinstance(tubelet, numbers.Integral) and not isinstance(tubelet, bool):
        p = check_positive_int(tubelet, "tubelet")
        return 1, p, p
    if isinstance(tubelet, (tuple, list)) and len(tubelet) == 3:
        return tuple(check_positive_int(v, f"tubelet[{i}]") for i, v in enumerate(tubelet))
    raise TypeError(f"tubelet must be an int p (meaning (1, p, p)) or a 3-tuple (t, p, q) of positive ints, "
                    f"got {tubelet!r}")


def _check_clip_shape(clip_shape) -> tuple[int, int, int, int]:
    if not isinstance(clip_shape, (tuple, list, torch.Size)) or len(clip_shape) != 4:
        raise ValueError(f"clip_shape must be a 4-tuple (T, C, H, W), got {clip_shape!r}")
    return tuple(check_positive_int(v, f"clip_shape[{i}]") for i, v in enumerate(clip_shape))


def _grid(clip_shape, tubelet) -> tuple[tuple[int, int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    shape = _check_clip_shape(clip_shape)
    tub = _check_tubelet(tubelet)
    T, _, H, W = shape
    for axis, size, k in zip(_AXES, (T, H, W), tub):
        if size % k:
            raise ValueError(f"{axis} = {size} is not divisible by the tubelet size {k} along that axis "
                             f"(tubelet {tub}, clip shape (T, C, H, W) = {shape})")
    return shape, tub, (T // tub[0], H // tub[1], W // tub[2])


def _as_tensor_keep_dtype(x, name: str, ndim: int) -> torch.Tensor:
    """Tensor view of ``x`` (numpy arrays are wrapped, torch tensors pass through with autograd)."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"{name} must be a numeric array, got numpy dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.ndim != ndim:
        expected = "(B, T, C, H, W)" if ndim == 5 else "(B, N, P)"
        raise ValueError(f"{name} must have shape {expected} ({ndim} dimensions), "
                         f"got {x.ndim} dimension(s) of shape {tuple(x.shape)}")
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x.detach())
        if bool(bad.any()):
            n_nan = int(torch.isnan(x.detach()).sum())
            raise ValueError(f"{name} contains {n_nan} NaN and {int(bad.sum()) - n_nan} Inf value(s); "
                             "all values must be finite")
    return x


# --------------------------------------------------------------------------- public API

def token_grid(clip_shape, tubelet) -> tuple[int, int, int]:
    """Number of tubelets along time, rows and columns.

    Parameters
    ----------
    clip_shape : tuple (T, C, H, W)
    tubelet : int or tuple (t, p, q)

    Returns
    -------
    grid : tuple of int ``(T/t, H/p, W/q)``; there are ``N = prod(grid)`` tokens.

    Raises
    ------
    ValueError
        If T, H or W is not divisible by the tubelet size along that axis.
    """
    return _grid(clip_shape, tubelet)[2]


def patchify(clips, tubelet=(4, 8, 8)) -> torch.Tensor:
    """Cut clips into space-time tokens.

    .. math:: \\text{tokens}[b, (t_i n_H + h_i) n_W + w_i, (d_t, c, d_y, d_x)]
              = \\text{clips}[b, t_i t + d_t, c, h_i p + d_y, w_i q + d_x]

    Parameters
    ----------
    clips : torch.Tensor or np.ndarray, shape (B, T, C, H, W)
        Any dtype, any device; finite values.
    tubelet : int or tuple (t, p, q), default (4, 8, 8)
        An int ``p`` means ``(1, p, p)``.

    Returns
    -------
    tokens : torch.Tensor, shape (B, N, P)
        ``N = (T/t)(H/p)(W/q)`` tokens of length ``P = t C p q``, same dtype and
        device as ``clips``. :func:`unpatchify` inverts it exactly.

    Raises
    ------
    ValueError
        Wrong number of dimensions, non-finite values, or T, H, W not divisible
        by the tubelet.
    """
    x = _as_tensor_keep_dtype(clips, "clips", 5)
    B, T, C, H, W = x.shape
    _, (t, p, q), (nT, nH, nW) = _grid((T, C, H, W), tubelet)
    x = x.reshape(B, nT, t, C, nH, p, nW, q)
    x = x.permute(0, 1, 4, 6, 2, 3, 5, 7)          # (B, nT, nH, nW, t, C, p, q)
    return x.reshape(B, nT * nH * nW, t * C * p * q)


def unpatchify(tokens, clip_shape, tubelet=(4, 8, 8)) -> torch.Tensor:
    """Put space-time tokens back into clips; the exact inverse of :func:`patchify`.

    Parameters
    ----------
    tokens : torch.Tensor or np.ndarray, shape (B, N, P)
        With ``N = (T/t)(H/p)(W/q)`` and ``P = t C p q``.
    clip_shape : tuple (T, C, H, W)
        Shape of one clip.
    tubelet : int or tuple (t, p, q), default (4, 8, 8)

    Returns
    -------
    clips : torch.Tensor, shape (B, T, C, H, W)
        Same dtype and device as ``tokens``.

    Raises
    ------
    ValueError
        Wrong number of dimensions, non-finite values, T, H, W not divisible by
        the tubelet, or (N, P) not matching ``clip_shape`` and ``tubelet``.
    """
    x = _as_tensor_keep_dtype(tokens, "tokens", 3)
    (T, C, H, W), (t, p, q), (nT, nH, nW) = _grid(clip_shape, tubelet)
    B, N, P = x.shape
    if (N, P) != (nT * nH * nW, t * C * p * q):
        raise ValueError(f"tokens of shape (B, N, P) = {tuple(x.shape)} do not match clip_shape {(T, C, H, W)} "
                         f"and tubelet {(t, p, q)}: expected N = {nT * nH * nW} tokens of length "
                         f"P = {t * C * p * q}")
    x = x.reshape(B, nT, nH, nW, t, C, p, q)
    x = x.permute(0, 1, 4, 5, 2, 6, 3, 7)          # (B, nT, t, C, nH, p, nW, q)
    return x.reshape(B, T, C, H, W)


def token_positions(clip_shape, tubelet, device=None) -> torch.Tensor:
    """Block coordinates of every token, in token order.

    Parameters
    ----------
    clip_shape : tuple (T, C, H, W)
    tubelet : int or tuple (t, p, q)
    device : torch.device or str, optional

    Returns
    -------
    positions : torch.LongTensor, shape (N, 3)
        Row ``k`` is ``(ti, hi, wi)`` (frame-block, row-block, column-block) of
        token ``k``, so ``k = (ti * nH + hi) * nW + wi``.
    """
    nT, nH, nW = token_grid(clip_shape, tubelet)
    axes = [torch.arange(n, dtype=torch.long, device=device) for n in (nT, nH, nW)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def positional_embedding(clip_shape, tubelet, dim: int, *, base: float = 10000.0,
                         device=None) -> torch.Tensor:
    """Factorised sinusoidal position embedding of the tokens.

    The embedding is the concatenation of three sinusoidal embeddings of
    ``dim/3`` entries each, one per axis (frame-block, row-block, column-block).
    For an axis coordinate ``s`` and ``k = 0 .. m-1`` with ``m = dim/6``:

    .. math:: e(s)_{2k} = \\sin(s\\, \\omega_k), \\quad e(s)_{2k+1} = \\cos(s\\, \\omega_k),
              \\quad \\omega_k = \\text{base}^{-k/m}.

    Parameters
    ----------
    clip_shape : tuple (T, C, H, W)
    tubelet : int or tuple (t, p, q)
    dim : int
        Embedding size, divisible by 6 (sin and cos for each of the 3 axes).
    base : float, default 10000.0
        Longest wavelength factor (Vaswani et al., 2017).
    device : torch.device or str, optional

    Returns
    -------
    embedding : torch.Tensor of float32, shape (N, dim)
        Row ``k`` is the embedding of token ``k`` (same order as :func:`patchify`).
    """
    dim = check_positive_int(dim, "dim")
    if dim % 6:
        raise ValueError(f"dim must be divisible by 6 (sin and cos for each of the 3 axes frame, row, column), "
                         f"got dim = {dim}")
    base = check_positive_float(base, "base")
    pos = token_positions(clip_shape, tubelet, device=device).to(torch.float64)      # (N, 3)
    m = dim // 6
    omega = base ** (-torch.arange(m, dtype=torch.float64, device=pos.device) / m)   # (m,)
    angles = pos[:, :, None] * omega                                                 # (N, 3, m)
    emb = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)                # (N, 3, m, 2)
    return emb.reshape(pos.shape[0], dim).to(torch.float32)
