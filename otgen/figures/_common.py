"""Shared helpers of the figure modules: writing PNG + JSON side by side, loss curves.

The backend is left to matplotlib (Agg on a machine without a display, inline in a notebook):
every figure is written to a file and closed, so none opens a window.
"""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np

from otgen.experiments._common import check_out_dir, jsonable

__all__ = ["plt", "new_figure", "save_figure", "loss_curve_figure", "check_out_dir"]

CURVE_POINTS = 100       # a loss curve is smoothed over len / CURVE_POINTS steps: noise hidden, trend kept
JSON_POINTS = 200        # points of a curve written to the JSON beside its figure


def new_figure(n_panels: int, size: float = 4.0):
    """A row of ``n_panels`` square axes."""
    fig, axes = plt.subplots(1, n_panels, figsize=(size * n_panels, size), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, out_dir, name: str, numbers: dict) -> dict:
    """Write ``<out_dir>/<name>.png`` and ``<out_dir>/<name>.json``; close the figure.

    Returns ``numbers`` with the two paths added under ``"png"`` and ``"json"``.
    """
    out_dir = check_out_dir(out_dir)
    png = os.path.join(out_dir, f"{name}.png")
    js = os.path.join(out_dir, f"{name}.json")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    numbers = dict(numbers)
    with open(js, "w") as f:
        json.dump(jsonable(numbers), f, indent=2, sort_keys=True)
    numbers["png"], numbers["json"] = png, js
    return numbers


def loss_curve_figure(losses: dict, out_dir, name: str, *, log: bool = True) -> dict:
    """Training-loss curves (moving mean), one per model: ``losses`` name -> per-step losses.

    Shows whether a baseline reached its plateau. Returns the JSON numbers with ``png`` / ``json``.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    numbers = {}
    for label, loss in losses.items():
        L = np.asarray(loss, dtype=np.float64)
        w = max(len(L) // CURVE_POINTS, 1)
        smooth = np.convolve(L, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w, smooth, label=f"{label} ({len(L)} steps)")
        pts = np.linspace(0, len(smooth) - 1, min(JSON_POINTS, len(smooth))).astype(int)
        numbers[label] = dict(window=w, steps=(pts + w).tolist(), loss=smooth[pts].tolist())
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (moving mean)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("training loss", fontsize=9)
    return save_figure(fig, out_dir, name, numbers)
