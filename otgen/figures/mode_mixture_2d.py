"""Mode mixture in 2-D: semi-discrete OT (with the singular-set detector) against a diffusion model.

Draws the results of :func:`otgen.experiments.toy2d.run_mode_mixture_2d`; fits nothing. The
data are separated Gaussian modes (a ring or a grid). A diffusion model learns a smooth score
and so puts mass in the gaps between modes; the OT map :math:`\\nabla u_h` is discontinuous
exactly on the singular set and sends no mass there, and its piecewise-linear extension blends
targets only inside one mode [1]_ [2]_. The number compared is the off-support rate
(:func:`otgen.metrics.latent.off_support_rate`).

References
----------
.. [1] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [2] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from otgen.figures._common import new_figure, save_figure

__all__ = ["mode_mixture_2d_figure"]

_MARGIN = 0.5                 # axes limits: the data's bounding box plus this margin
_TAB10_MODES = 10             # up to this many modes, colour them with tab10, else tab20


def mode_mixture_2d_figure(results, out_dir) -> dict:
    """Draw the data, the extended OT samples (with the detector) and the diffusion samples.

    Panels: the data coloured by mode; the extended OT samples, those whose source point is near
    the singular set in red, the singular pairs as thin segments joining their targets; the
    diffusion samples. Titles give the off-support rates measured by the experiment.

    Parameters
    ----------
    results : ModeMixture2DResults
        From :func:`otgen.experiments.toy2d.run_mode_mixture_2d` (``data`` (N, 2), ``labels`` (N,),
        ``targets`` (N', 2), ``singular_pairs`` (S, 2), ``samples`` {name: (M, 2)}, ``near_singular`` (M,),
        ``settings``, ``scores``).
    out_dir : str or os.PathLike
        Folder for ``mode_mixture_2d_<dataset>.png`` / ``.json``.

    Returns
    -------
    dict
        The settings and ``results.scores`` (``off_support`` {"ot_plain", "ot_extended", "diffusion"},
        ``radius``, ``n_modes_detected``, ``n_modes_true``, ``threshold``, ``n_singular_pairs``,
        ``near_singular_fraction``, ``ot_converged``, ``temperature``), and the file paths.
    """
    settings, scores = results.settings, results.scores
    Y, labels, T = np.asarray(results.data), np.asarray(results.labels), np.asarray(results.targets)
    E, Dn = np.asarray(results.samples["ot_extended"]), np.asarray(results.samples["diffusion"])
    near = np.asarray(results.near_singular, dtype=bool)
    fig, (a0, a1, a2) = new_figure(3)
    a0.scatter(Y[:, 0], Y[:, 1], s=2, c=labels, cmap="tab10" if labels.max() < _TAB10_MODES else "tab20")
    a0.set_title(f"data ({settings.dataset}, N={len(Y)})", fontsize=9)
    for i, j in np.asarray(results.singular_pairs):
        a1.plot(T[[i, j], 0], T[[i, j], 1], color="0.75", lw=0.3, zorder=1)
    a1.scatter(E[~near, 0], E[~near, 1], s=2, c="tab:blue", zorder=2, label="OT (extended)")
    a1.scatter(E[near, 0], E[near, 1], s=4, c="tab:red", zorder=3, label="near singular set")
    a1.legend(loc="upper right", fontsize=7, markerscale=3)
    a1.set_title(f"OT + detector: {scores['n_modes_detected']} modes, off-support "
                 f"{scores['off_support']['ot_extended']:.3f}", fontsize=9)
    a2.scatter(Dn[:, 0], Dn[:, 1], s=2, c="tab:green")
    a2.set_title(f"diffusion ({settings.diffusion_method.upper()}): off-support "
                 f"{scores['off_support']['diffusion']:.3f}", fontsize=9)
    lo, hi = Y.min(0) - _MARGIN, Y.max(0) + _MARGIN
    for ax in (a0, a1, a2):
        ax.set_aspect("equal")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    numbers = {**dataclasses.asdict(settings), **scores}
    return save_figure(fig, out_dir, f"mode_mixture_2d_{settings.dataset}", numbers)
