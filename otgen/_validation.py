"""Input checks shared by every public entry point.

Every public function validates its inputs here, at the boundary, and raises a
``ValueError`` / ``TypeError`` whose message says what was expected and what
was received.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


class ConvergenceWarning(UserWarning):
    """A solver stopped (``max_iter``) before reaching its tolerance."""


def resolve_device(device=None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; strings and devices pass through."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:K' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    return dev


def check_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def as_tensor(x, name: str, *, ndim: int | None = None, dtype=torch.float32, device=None,
              min_rows: int = 1, allow_nonfinite: bool = False) -> torch.Tensor:
    """Convert ``x`` (numpy array, torch tensor or nested list) to a float tensor and check it.

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for a wrong number of
    dimensions, too few rows, or NaN / Inf values.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"{name} must be a numeric array, got numpy dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (list, tuple)):
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array, got a {type(x).__name__} that numpy cannot convert") from exc
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} must be real, got complex dtype {t.dtype}")
    if ndim is not None and t.ndim != ndim:
        shape = "(N, d)" if ndim == 2 else "(N,)" if ndim == 1 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {shape}, got an array with {t.ndim} dimension(s) of shape {tuple(t.shape)}")
    if t.ndim >= 1 and t.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=dtype)
    if not allow_nonfinite:
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf value(s); all values must be finite")
    return t


def check_weights(weights, n: int, name: str = "weights", *, device=None, atol: float = 1e-6) -> torch.Tensor:
    """Probability vector of length ``n`` (float64): non-negative, summing to 1. ``None`` -> uniform."""
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    w = as_tensor(weights, name, ndim=1, dtype=torch.float64, device=device)
    if w.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one per target), got length {w.shape[0]}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative, got minimum {float(w.min()):.3g}")
    s = float(w.sum())
    if abs(s - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1, got sum {s:.8g}")
    return w / s


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value
