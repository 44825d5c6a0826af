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
from otgen.figures.convergence import draw_history

N_SHOWN = 100      # images per sample grid: a 10 x 10 grid is what a reader can still scan
ANGLE_BINS = 40    # bins of the facet-angle histogram
#: ten hues that stay apart for 0/9, 1/8, 4/6 (tab10's pale pairs are hard to tell apart)
DIGIT_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#000000")

__all__ = ["mnist_mode_mixture_figure", "comparison_figures", "training_figure", "mixed_mask", "image_grid"]


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
    dict of PNG paths: ``samples``, ``mode_mixture``, ``diffusion_loss``, ``training``.
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
    out["training"] = training_figure(run.artifacts, out_dir)["png"]
    return out


def training_figure(art, out_dir) -> dict:
    """How every model of a comparison was trained, in one row: the latent model's loss per epoch
    (each of its parts), the diffusion loss per step (moving mean) and the OT solve's estimated TV
    error with its noise per iteration. A baseline that has not reached its plateau shows here.

    Parameters
    ----------
    art : otgen.experiments.mnist.MNISTArtifacts
    out_dir : path

    Returns
    -------
    dict: the curves drawn, ``png`` and ``json`` (``mnist_training``).
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    numbers = {"latent": {}, "diffusion": {}, "ot": {}}
    hist = art.ae.history_
    for key in ("loss", "embedding_loss", "decoder_loss"):
        if len(hist.get(key, ())):
            axes[0].plot(np.arange(1, len(hist[key]) + 1), hist[key], "o-", ms=3, label=key.replace("_", " "))
            numbers["latent"][key] = list(map(float, hist[key]))
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log", title=f"latent model ({type(art.ae).__name__})")
    axes[0].legend(fontsize=8)
    loss = np.asarray(art.diffusion.history_["loss"], np.float64)
    w = max(len(loss) // 100, 1)
    smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
    axes[1].plot(np.arange(len(smooth)) + w, smooth)
    axes[1].set(xlabel="training step", ylabel=f"loss (moving mean of {w})", yscale="log",
                title=f"latent diffusion ({len(loss)} steps)")
    numbers["diffusion"] = dict(window=w, last=float(smooth[-1]) if len(smooth) else None)
    ot = draw_history(axes[2], art.ot.history_, tol=art.ot.tol)
    axes[2].set_title(f"semi-discrete OT ({len(ot['x'])} iterations)")
    numbers["ot"] = dict(iter=ot["x"], tv=ot["tv"], noise=ot["noise"], tol=ot["tol"])
    fig.tight_layout()
    return save_figure(fig, out_dir, "mnist_training", numbers)


def _digit_clusters(ax, z_tr, labels) -> None:
    """Training codes coloured by digit (a qualitative palette of 10 distinct hues), the digit written at each
    cluster's median point (the labels are the legend)."""
    labels = np.asarray(labels)
    for d in np.unique(labels):
        sel = labels == d
        colour = DIGIT_COLOURS[int(d) % len(DIGIT_COLOURS)]
        ax.scatter(z_tr[sel, 0], z_tr[sel, 1], color=colour, s=2, alpha=0.35, rasterized=True)
        cx, cy = np.median(z_tr[sel, 0]), np.median(z_tr[sel, 1])
        ax.text(cx, cy, str(d), fontsize=13, fontweight="bold", color=colour, ha="center", va="center",
                bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec=colour, alpha=0.85), zorder=6)


def _angle_histogram(ax, angles: dict) -> dict:
    """Facet angles between adjacent cells of the same digit and of different digits (log-spaced bins)."""
    within, between = np.asarray(angles["within"]), np.asarray(angles["between"])
    both = np.concatenate([within, between])
    both = both[both > 0]
    if not len(both):
        ax.text(0.5, 0.5, "no adjacent cells", ha="center", transform=ax.transAxes)
        return {}
    bins = np.geomspace(both.min(), both.max() * 1.0001, ANGLE_BINS)
    ax.hist(within, bins=bins, alpha=0.6, density=True, label=f"same digit ({len(within)} pairs)")
    ax.hist(between, bins=bins, alpha=0.6, density=True, label=f"different digits ({len(between)} pairs)")
    if np.isfinite(angles.get("threshold", np.inf)):
        ax.axvline(angles["threshold"], color="k", ls="--", lw=1, label="detector threshold")
    ax.set_xscale("log")
    ax.set(xlabel="facet angle between adjacent cells (rad)", ylabel="density")
    ax.set_title("facet angles: within vs between digits", fontsize=10)
    ax.legend(fontsize=8)
    return dict(within_median=float(np.median(within)) if len(within) else None,
                between_median=float(np.median(between)) if len(between) else None)


def mnist_mode_mixture_figure(panels: dict, z_train, labels, out_dir, *, tau: float = 0.2, angles=None,
                              numbers=None) -> dict:
    """The seeds' Fig. 3 for OT and diffusion side by side, in a 2-D latent.

    Draws what :func:`otgen.experiments.mnist.mode_mixture_points` returns: the standardised
    training codes as ten labelled digit clusters, each generator's points overlaid, and its
    decoded images as a 10 x 10 grid. Images the classifier finds mixed (two classes with
    probability ``>= tau``) are outlined in red (red rings in the latent panel); points flagged by
    the detector are marked orange (OT: source points near the singular set; diffusion: codes whose
    nearest training codes lie in two or more modes). With ``angles``, a last panel shows the
    histogram of facet angles between cells of the same digit and of different digits.

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
    angles : dict, optional
        ``within`` (P1,), ``between`` (P2,) facet angles and the detector's ``threshold``
        (:func:`otgen.experiments.mnist.facet_angles`).
    numbers : dict, optional
        More numbers for the JSON (settings, detector summary).

    Returns
    -------
    dict
        ``mixed``, ``flagged``, ``mixed_and_flagged`` ({"ot", "diffusion"}: counts), ``points``, ``tau``,
        ``angles`` (medians), the given ``numbers``, ``png`` and ``json``.
    """
    out_dir = check_out_dir(out_dir)
    z_tr = np.asarray(z_train)
    n_points = len(next(iter(panels.values()))["z"])
    numbers = dict(numbers or {}, tau=tau, n_points=n_points, mixed={}, flagged={}, mixed_and_flagged={}, points={})
    rows = len(panels) + (angles is not None)
    fig, axes = plt.subplots(rows, 2, figsize=(13, 6.2 * rows), squeeze=False)
    lo, hi = np.percentile(z_tr, 0.5, 0) - 0.5, np.percentile(z_tr, 99.5, 0) + 0.5
    for row, (key, p) in enumerate(panels.items()):
        z, flagged, title, imgs = np.asarray(p["z"]), np.asarray(p["flagged"], bool), p["title"], p["images"]
        mixed = mixed_mask(p["probs"], tau)
        ax = axes[row, 0]
        _digit_clusters(ax, z_tr, labels)
        ax.scatter(z[:, 0], z[:, 1], c="k", s=10, zorder=3, label="generated")
        ax.scatter(z[flagged, 0], z[flagged, 1], marker="^", facecolors="none", edgecolors="orange", s=60,
                   lw=1.2, zorder=4, label="flagged by the detector")
        ax.scatter(z[mixed, 0], z[mixed, 1], marker="o", facecolors="none", edgecolors="red", s=80, lw=1.5,
                   zorder=5, label=f"decodes to a mixed digit (τ={tau})")
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="latent 1 (standardised)",
               ylabel="latent 2 (standardised)")
        ax.set_title(f"{title}\n{n_points} samples over the training codes", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3)
        image_grid(axes[row, 1], imgs, mixed=mixed, flagged=flagged,
                   title=f"{title}\n{int(mixed.sum())}/{n_points} mixed (red), {int(flagged.sum())} flagged (orange)")
        numbers["mixed"][key] = int(mixed.sum())
        numbers["flagged"][key] = int(flagged.sum())
        numbers["mixed_and_flagged"][key] = int((mixed & flagged).sum())
        numbers["points"][key] = z.tolist()
    if angles is not None:
        numbers["angles"] = _angle_histogram(axes[-1, 0], angles)
        axes[-1, 1].axis("off")
    fig.tight_layout()
    return save_figure(fig, out_dir, "mnist_mode_mixture", numbers)
