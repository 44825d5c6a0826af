"""Mode mixture on MNIST (the seeds' Fig. 3): latent clusters, generated points, decoded digits.

An autoencoder with a 2-D latent space maps the ten digits to ten clusters (modes). A generated
latent point well inside a cluster decodes to a clear digit; one in the gap between two clusters
decodes to a blurry fusion of two digits, which the classifier splits between two classes (a
"mixed" image, two class probabilities :math:`\\ge \\tau`). Semi-discrete OT [1]_ sends no mass into
the gaps (its singular set separates the modes); a diffusion model [2]_ smooths the density across
them.

References
----------
.. [1] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [2] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.patches import Rectangle

from otgen._validation import check_positive_float
from otgen.experiments.mnist import FLOORS, NAMES
from otgen.figures._common import check_out_dir, loss_curve_figure, plt, save_figure

N_SHOWN = 100      # images per sample grid: a 10 x 10 grid is what a reader can still scan

__all__ = ["mnist_mode_mixture_figure", "comparison_figures", "mixed_mask", "image_grid"]


def mixed_mask(probs, tau: float = 0.2) -> np.ndarray:
    """Rows of class probabilities (n, C) with at least two classes of probability ``>= tau`` -> (n,) bool."""
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (n, C), got shape {p.shape}")
    tau = check_positive_float(tau, "tau")
    return (p >= tau).sum(1) >= 2


def image_grid(ax, images, *, mixed=None, flagged=None, ncols: int = 10, title: str = ""):
    """Draw up to ``ncols**2`` images (n, 28, 28) as a mosaic on ``ax``.

    Images with ``mixed`` True get a red outline; those with ``flagged`` True a small orange
    square in their top-left corner.
    """
    imgs = np.asarray(images, dtype=np.float32)[: ncols * ncols]
    n = len(imgs)
    nrows = max(1, math.ceil(n / ncols))
    mosaic = np.ones((nrows * 28, ncols * 28), np.float32)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncols)
        mosaic[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] = 1.0 - im      # dark digits on white
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for i in range(n):
        r, c = divmod(i, ncols)
        if mixed is not None and mixed[i]:
            ax.add_patch(Rectangle((c * 28 - 0.5, r * 28 - 0.5), 28, 28, fill=False, ec="red", lw=1.5))
        if flagged is not None and flagged[i]:
            ax.add_patch(Rectangle((c * 28 + 0.5, r * 28 + 0.5), 5, 5, fc="orange", ec="none"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def comparison_figures(run, out_dir) -> dict:
    """The figures of an MNIST comparison (:func:`otgen.experiments.mnist.run`): sample grids with
    mixed digits outlined, mode mixture against τ with standard errors, the diffusion loss curve.

    Parameters
    ----------
    run : otgen.experiments.mnist.MNISTRun
    out_dir : path

    Returns
    -------
    dict of PNG paths: ``samples``, ``mode_mixture``, ``diffusion_loss``.
    """
    out_dir = check_out_dir(out_dir)
    rows, taus, tau = {**run.metrics["generators"], **run.metrics["floors"]}, run.settings.taus, run.settings.tau
    names = list(run.samples)
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 4.2 * nrow), squeeze=False)
    counts = {}
    for ax, name in zip(axes.flat, names):
        imgs = np.asarray(run.samples[name]["images"])[:N_SHOWN]
        mixed = mixed_mask(run.artifacts.clf.predict_proba(imgs), tau)
        near = run.samples[name]["info"].get("near_singular")
        counts[name] = int(mixed.sum())
        image_grid(ax, imgs, mixed=mixed, flagged=None if near is None else np.asarray(near)[:N_SHOWN],
                   title=f"{NAMES[name]}: {mixed.sum()}/{len(imgs)} mixed (τ={tau})")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    out = {"samples": save_figure(fig, out_dir, "mnist_samples", dict(tau=tau, mixed_in_first_100=counts))["png"]}

    fig, ax = plt.subplots(figsize=(6, 4))
    curves = {}
    for name, r in rows.items():
        ys = np.array([r["mixed_rate"][str(float(t))] for t in taus])
        se = np.array([r["mixed_rate_se"][str(float(t))] for t in taus])
        curves[name] = dict(rate=ys.tolist(), se=se.tolist())
        ax.errorbar(taus, ys, yerr=se, marker="o", capsize=2, ls="--" if name in FLOORS else "-", label=NAMES[name])
    ax.set_xlabel("τ")
    ax.set_ylabel("mode-mixture rate (± standard error)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    out["mode_mixture"] = save_figure(fig, out_dir, "mnist_mode_mixture_vs_tau",
                                      dict(taus=list(taus), rates=curves))["png"]
    out["diffusion_loss"] = loss_curve_figure({"latent DDPM": run.artifacts.diffusion.history_["loss"]}, out_dir,
                                              "mnist_diffusion_loss")["png"]
    return out


def mnist_mode_mixture_figure(panels: dict, z_train, labels, out_dir, *, tau: float = 0.2, numbers=None) -> dict:
    """The seeds' Fig. 3 for OT and diffusion side by side, in a 2-D autoencoder latent.

    Draws what :func:`otgen.experiments.mnist.mode_mixture_points` returns: the standardised
    training codes coloured by digit (ten clusters when the latent separates them), each
    generator's points overlaid, and its decoded images as a 10 x 10 grid. Images the classifier
    finds mixed (two classes with probability ``>= tau``) are outlined in red (red rings in the
    latent panel); points flagged by the detector are marked orange (OT: source points near the
    singular set; diffusion: codes whose nearest training codes lie in two or more modes).

    Parameters
    ----------
    panels : dict {"ot", "diffusion"} -> dict(z (m, 2), flagged (m,), images (m, 28, 28), probs (m, 10), title)
    z_train : array (n, 2)
        Standardised training codes.
    labels : array (n,)
        Their digits.
    out_dir : path
        Receives ``mnist_mode_mixture.png`` / ``.json``.
    tau : float, default 0.2
    numbers : dict, optional
        More numbers for the JSON (settings, detector summary).

    Returns
    -------
    dict
        ``mixed``, ``flagged``, ``mixed_and_flagged`` ({"ot", "diffusion"}: counts), ``points``, ``tau``,
        the given ``numbers``, ``png`` and ``json``.
    """
    out_dir = check_out_dir(out_dir)
    z_tr = np.asarray(z_train)
    n_points = len(next(iter(panels.values()))["z"])
    numbers = dict(numbers or {}, tau=tau, n_points=n_points, mixed={}, flagged={}, mixed_and_flagged={}, points={})
    fig, axes = plt.subplots(2, 2, figsize=(11, 11))
    lo, hi = np.percentile(z_tr, 0.5, 0) - 0.5, np.percentile(z_tr, 99.5, 0) + 0.5
    for row, (key, p) in enumerate(panels.items()):
        z, flagged, title, imgs = np.asarray(p["z"]), np.asarray(p["flagged"], bool), p["title"], p["images"]
        mixed = mixed_mask(p["probs"], tau)
        ax = axes[row, 0]
        sc = ax.scatter(z_tr[:, 0], z_tr[:, 1], c=labels, cmap="tab10", s=2, alpha=0.35, vmin=-0.5, vmax=9.5)
        ax.scatter(z[:, 0], z[:, 1], c="k", s=10, zorder=3, label="generated")
        ax.scatter(z[flagged, 0], z[flagged, 1], marker="^", facecolors="none", edgecolors="orange", s=60,
                   lw=1.2, zorder=4, label="flagged by detector")
        ax.scatter(z[mixed, 0], z[mixed, 1], marker="o", facecolors="none", edgecolors="red", s=80, lw=1.5,
                   zorder=5, label=f"decodes to a mixed digit (τ={tau})")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"{title}: latent codes (10 digits) + {n_points} samples", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        image_grid(axes[row, 1], imgs, mixed=mixed, flagged=flagged,
                   title=f"{title}: {int(mixed.sum())}/{n_points} mixed (red), {int(flagged.sum())} flagged (orange)")
        numbers["mixed"][key] = int(mixed.sum())
        numbers["flagged"][key] = int(flagged.sum())
        numbers["mixed_and_flagged"][key] = int((mixed & flagged).sum())
        numbers["points"][key] = z.tolist()
    fig.colorbar(sc, ax=axes[:, 0].tolist(), ticks=range(10), shrink=0.5, label="digit")
    return save_figure(fig, out_dir, "mnist_mode_mixture", numbers)
