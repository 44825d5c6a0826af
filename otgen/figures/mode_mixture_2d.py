"""Mode mixture in 2-D: semi-discrete OT (with the singular-set detector) against a diffusion model.

The data are separated Gaussian modes (a ring or a grid). A diffusion model learns a smooth score
and so puts mass in the gaps between modes; the OT map :math:`\\nabla u_h` is discontinuous
exactly on the singular set and sends no mass there, and its piecewise-linear extension blends
targets only inside one mode [1]_ [2]_. The number compared is the off-support rate.

References
----------
.. [1] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [2] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
"""

from __future__ import annotations

import numpy as np
import torch

from otgen._validation import as_tensor, check_choice, check_positive_float, check_positive_int
from otgen.data.toy2d import gaussian_grid, gaussian_ring
from otgen.figures._common import new_figure, save_figure
from otgen.generate import DiffusionGenerator, OTGenerator
from otgen.singular.detector import SingularSetDetector, _check_seed
from otgen.transport.semidiscrete import SemiDiscreteOT

__all__ = ["mode_mixture_2d_figure", "off_support_rate"]

DATASETS = ("ring", "grid")


def _nn_distances(A: torch.Tensor, B: torch.Tensor, exclude_self: bool = False, chunk: int = 4096) -> torch.Tensor:
    """Distance of each row of A to its nearest row of B (chunked), (len(A),) float64."""
    out = []
    for s in range(0, len(A), chunk):
        d = torch.cdist(A[s:s + chunk], B)
        if exclude_self:
            d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out.append(d.min(1).values)
    return torch.cat(out)


def off_support_rate(samples, data, quantile=0.99) -> dict:
    """Fraction of samples farther than r from every data point.

    .. math:: r = Q_q\\big(\\{\\min_{j \\ne i} |x_i - x_j|\\}_i\\big), \\qquad
              \\text{rate} = \\frac1M \\#\\{m : \\min_i |s_m - x_i| > r\\},

    with :math:`Q_q` the q-quantile (default 0.99) of the data's own nearest-neighbour distances:
    a radius that 99 % of data points reach from their nearest neighbour, so the union of the
    balls of radius r about the data covers the modes without bridging the gaps between them.

    Parameters
    ----------
    samples : array_like, shape (M, d)
    data : array_like, shape (N, d)
        N >= 2.
    quantile : float in (0, 1], default 0.99

    Returns
    -------
    dict
        ``rate`` (float) and ``radius`` (float).
    """
    S = as_tensor(samples, "samples", ndim=2, dtype=torch.float64).cpu()
    X = as_tensor(data, "data", ndim=2, dtype=torch.float64, min_rows=2).cpu()
    if S.shape[1] != X.shape[1]:
        raise ValueError(f"samples must have {X.shape[1]} columns like data, got shape {tuple(S.shape)}")
    q = check_positive_float(quantile, "quantile")
    if q > 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    r = float(torch.quantile(_nn_distances(X, X, exclude_self=True), q))
    rate = float((_nn_distances(S, X) > r).double().mean())
    return dict(rate=rate, radius=r)


def _dataset(name, n, seed):
    if name == "ring":
        return gaussian_ring(n, seed=seed)
    return gaussian_grid(n, seed=seed)


def mode_mixture_2d_figure(out_dir, dataset="ring", n_data=1000, n_samples=2000, seed=0, diffusion_steps=10000, *,
                           ot_tol=0.05, k=3, diffusion_hidden=128, diffusion_depth=3, diffusion_method="ddpm",
                           num_inference_steps=None, diffusion_kwargs=None):
    """Data, OT samples (with the singular-set detector) and DDPM samples on a 2-D mixture.

    The OT map is fitted from the uniform square to the ``n_data`` points
    (:class:`~otgen.transport.SemiDiscreteOT`, ``tol=ot_tol``); the detector finds the mode
    boundaries; the plain generator (:math:`\\nabla u_h`) and the extended one (blending within a
    mode, :class:`~otgen.generate.OTGenerator`) draw ``n_samples`` points each. A
    :class:`~otgen.diffusion.LatentDiffusion` (MLP denoiser, ``diffusion_steps`` training steps)
    draws the same number. Panels: data; extended OT samples with the samples of source points
    near the singular set in red and the singular pairs as thin segments joining their targets;
    diffusion samples. All off-support rates (:func:`off_support_rate`, r = 99th percentile of
    the data's nearest-neighbour distances) are measured at the same sample count.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder for ``mode_mixture_2d_<dataset>.png`` / ``.json``.
    dataset : {"ring", "grid"}
        :func:`~otgen.data.gaussian_ring` (8 modes) or :func:`~otgen.data.gaussian_grid` (5 x 5).
    n_data, n_samples : int
    seed : int, default 0
    diffusion_steps : int, default 3000
    ot_tol : float, default 0.05
    k : int, default 3
    diffusion_hidden, diffusion_depth : int
    diffusion_method : {"ddpm", "ddim"}
    num_inference_steps : int or None
    diffusion_kwargs : dict or None
        Further :class:`~otgen.diffusion.LatentDiffusion` arguments (e.g. ``lr``, ``batch_size``).

    Returns
    -------
    dict
        ``off_support`` ({"ot_plain", "ot_extended", "diffusion"}), ``radius``, ``n_modes_detected``,
        ``n_modes_true``, ``threshold``, ``n_singular_pairs``, ``near_singular_fraction``, settings, and
        the file paths.
    """
    check_choice(dataset, "dataset", DATASETS)
    n_data = check_positive_int(n_data, "n_data", minimum=2)
    n_samples = check_positive_int(n_samples, "n_samples")
    seed = _check_seed(seed)
    diffusion_steps = check_positive_int(diffusion_steps, "diffusion_steps")
    Y, labels = _dataset(dataset, n_data, seed)
    ot = SemiDiscreteOT(tol=ot_tol, verbose=False, seed=seed, device="cpu").fit(Y)
    det = SingularSetDetector(k=k, seed=seed).fit(ot)
    plain, _ = OTGenerator(ot, det, extension="none", k=k, seed=seed).sample(n_samples)
    ext, info = OTGenerator(ot, det, extension="piecewise-linear", k=k, seed=seed).sample(n_samples)
    from otgen.diffusion import LatentDiffusion
    model = LatentDiffusion(hidden=diffusion_hidden, depth=diffusion_depth, n_steps=diffusion_steps, device="cpu",
                            seed=seed, verbose=False, **dict(diffusion_kwargs or {})).fit(Y)
    diff, _ = DiffusionGenerator(model, method=diffusion_method, num_inference_steps=num_inference_steps,
                                 seed=seed).sample(n_samples)
    rates = {name: off_support_rate(s, Y) for name, s in
             (("ot_plain", plain), ("ot_extended", ext), ("diffusion", diff))}
    near = info["near_singular"].cpu().numpy()

    fig, (a0, a1, a2) = new_figure(3)
    a0.scatter(Y[:, 0], Y[:, 1], s=2, c=labels, cmap="tab10" if labels.max() < 10 else "tab20")
    a0.set_title(f"data ({dataset}, N={n_data})", fontsize=9)
    T = ot.targets_.numpy()
    for i, j in det.singular_pairs_:
        a1.plot(T[[i, j], 0], T[[i, j], 1], color="0.75", lw=0.3, zorder=1)
    E = ext.numpy()
    a1.scatter(E[~near, 0], E[~near, 1], s=2, c="tab:blue", zorder=2, label="OT (extended)")
    a1.scatter(E[near, 0], E[near, 1], s=4, c="tab:red", zorder=3, label="near singular set")
    a1.legend(loc="upper right", fontsize=7, markerscale=3)
    a1.set_title(f"OT + detector: {det.n_components_} modes, off-support {rates['ot_extended']['rate']:.3f}",
                 fontsize=9)
    Dn = diff.numpy()
    a2.scatter(Dn[:, 0], Dn[:, 1], s=2, c="tab:green")
    a2.set_title(f"diffusion ({diffusion_method.upper()}): off-support {rates['diffusion']['rate']:.3f}", fontsize=9)
    lo, hi = Y.min(0) - 0.5, Y.max(0) + 0.5
    for ax in (a0, a1, a2):
        ax.set_aspect("equal")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    numbers = dict(dataset=dataset, n_data=n_data, n_samples=n_samples, seed=seed, diffusion_steps=diffusion_steps,
                   diffusion_method=diffusion_method,
                   off_support={name: r["rate"] for name, r in rates.items()}, radius=rates["diffusion"]["radius"],
                   n_modes_detected=int(det.n_components_), n_modes_true=int(len(np.unique(labels))),
                   threshold=det.threshold_, n_singular_pairs=int(len(det.singular_pairs_)),
                   near_singular_fraction=float(near.mean()), ot_converged=bool(ot.converged_),
                   temperature=info["temperature"])
    return save_figure(fig, out_dir, f"mode_mixture_2d_{dataset}", numbers)
