"""The solver demo (``otgen demo``): the power diagram of a fitted 2-D problem, its transported
samples and its convergence.

Semi-discrete OT from the uniform square to N points :math:`y_i` with masses :math:`\\nu_i` is the
power diagram :math:`W_i(h) = \\{x : \\langle x, y_i\\rangle + h_i \\ge \\langle x, y_j\\rangle + h_j\\ \\forall j\\}`
whose cells hold the masses :math:`\\nu_i` [1]_. The figure draws the cells exactly (in 2-D the
diagram is computed, not sampled), each mode of the data in its own colour; the targets with the
images :math:`\\nabla u_h(x)` of source samples; and the estimated total-variation error against
iterations with the noise of the estimate, the floor below which the solver cannot see.

References
----------
.. [1] X. Gu, F. Luo, J. Sun, S.-T. Yau, "Variational principles for Minkowski type problems,
   discrete optimal transport, and discrete Monge-Ampère equations", Asian J. Math. 20(2), 2016.
"""

from __future__ import annotations

import colorsys

import numpy as np
from matplotlib.collections import PolyCollection

from otgen.figures._common import plt, save_figure
from otgen.figures.convergence import draw_history

__all__ = ["categorical_colours", "demo_figure"]

GOLDEN = 0.6180339887498949          # hue step: consecutive labels land far apart on the colour wheel
LIGHTNESS = (0.38, 0.55, 0.70)       # three lightness levels multiply the distinct colours by three


def categorical_colours(n: int) -> np.ndarray:
    """``n`` distinct RGBA colours, consecutive ones far apart (hue stepped by the golden ratio,
    lightness cycled), so that neighbouring modes of a grid never share a colour -> (n, 4)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = np.ones((n, 4))
    for k in range(n):
        out[k, :3] = colorsys.hls_to_rgb((k * GOLDEN) % 1.0, LIGHTNESS[k % len(LIGHTNESS)], 0.75)
    return out


def demo_figure(Y, labels, cells, samples, history, out_dir, *, tol: float, tv_exact: float,
                numbers=None) -> dict:
    """Three panels: the exact power diagram in the source square, the targets with transported
    samples, and the convergence of the solve.

    Parameters
    ----------
    Y : array (N, 2)
        Targets.
    labels : array (N,)
        Mode of each target; each mode gets its own colour (:func:`categorical_colours`).
    cells : list of N arrays (k_i, 2)
        The exact power cells (:func:`otgen.transport.power2d.power_cells`); empty cells are skipped.
    samples : array (m, 2)
        :math:`\\nabla u_h(x)` of source samples.
    history : list of dict
        ``SemiDiscreteOT.history_``: ``iter``, ``tv`` and ``noise`` of each iteration.
    out_dir : path
        Receives ``demo.png`` and ``demo.json``.
    tol : float
        The solve's tolerance (a dashed line).
    tv_exact : float
        The TV error of the fitted heights measured on the exact diagram.
    numbers : dict, optional
        More numbers for the JSON.

    Returns
    -------
    dict: ``numbers`` with ``png`` and ``json``.
    """
    labels = np.asarray(labels)
    _, mode = np.unique(labels, return_inverse=True)
    colours = categorical_colours(int(mode.max()) + 1)[mode]
    fig, ax = plt.subplots(1, 3, figsize=(16, 5.2))
    keep = [len(c) > 0 for c in cells]
    ax[0].add_collection(PolyCollection([c for c in cells if len(c)], facecolors=colours[keep], edgecolors="k",
                                        linewidths=0.2, alpha=0.8))
    ax[0].set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xlabel="x₁", ylabel="x₂",
              title=f"power diagram in the source [-1,1]²\n(exact TV error {tv_exact:.3f})")
    ax[1].scatter(Y[:, 0], Y[:, 1], s=4, c=colours, label="targets")
    ax[1].scatter(samples[:, 0], samples[:, 1], s=14, facecolors="none", edgecolors="k", linewidths=0.4,
                  label="∇u_h(x) of source samples")
    ax[1].set(aspect="equal", xlabel="y₁", ylabel="y₂", title="targets and transported samples")
    ax[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    draw_history(ax[2], history, tol=tol)
    ax[2].set_title(f"convergence ({len(history)} iterations)")
    fig.tight_layout()
    return save_figure(fig, out_dir, "demo", dict(numbers or {}, tol=tol, tv_exact=tv_exact, history=history))
