"""Shared helpers of the figure modules: an Agg figure, and writing PNG + JSON side by side."""

from __future__ import annotations

import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _check_out_dir(out_dir) -> str:
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path (str or os.PathLike), got {type(out_dir).__name__}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir must be a folder, got the existing file {out_dir!r}")
    os.makedirs(out_dir, exist_ok=True)
    return out_dir


def _jsonable(x):
    """Convert numpy / torch scalars and arrays (recursively) to plain JSON types; NaN/Inf -> None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def new_figure(n_panels: int, size: float = 4.0):
    """A row of ``n_panels`` square axes (Agg backend)."""
    fig, axes = plt.subplots(1, n_panels, figsize=(size * n_panels, size), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, out_dir, name: str, numbers: dict) -> dict:
    """Write ``<out_dir>/<name>.png`` and ``<out_dir>/<name>.json``; close the figure.

    Returns ``numbers`` with the two paths added under ``"png"`` and ``"json"``.
    """
    out_dir = _check_out_dir(out_dir)
    png = os.path.join(out_dir, f"{name}.png")
    js = os.path.join(out_dir, f"{name}.json")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    numbers = dict(numbers)
    with open(js, "w") as f:
        json.dump(_jsonable(numbers), f, indent=2, sort_keys=True)
    numbers["png"], numbers["json"] = png, js
    return numbers
