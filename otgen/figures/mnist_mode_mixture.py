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
import torch

from otgen._validation import check_positive_float, check_positive_int
from otgen.figures._common import _check_out_dir, plt, save_figure
from otgen.generate import DiffusionGenerator, OTGenerator, _check_seed

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
    from matplotlib.patches import Rectangle
    for i in range(n):
        r, c = divmod(i, ncols)
        if mixed is not None and mixed[i]:
            ax.add_patch(Rectangle((c * 28 - 0.5, r * 28 - 0.5), 28, 28, fill=False, ec="red", lw=1.5))
        if flagged is not None and flagged[i]:
            ax.add_patch(Rectangle((c * 28 + 0.5, r * 28 + 0.5), 5, 5, fc="orange", ec="none"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def comparison_figures(out_dir, images: dict, classifier, rows: dict, diffusion_loss, *, flags=None,
                       taus=(0.1, 0.2, 0.3, 0.4), tau: float = 0.2) -> dict:
    """The figures of :func:`otgen.compare.compare_mnist`: sample grids, mode mixture vs τ, diffusion loss.

    Parameters
    ----------
    out_dir : path
    images : dict name -> array (n, 28, 28)
    classifier : MNISTClassifier
    rows : dict name -> metrics dict (with ``mode_mixture`` keyed by ``str(tau)``)
    diffusion_loss : sequence of float
        Per-step training loss.
    flags : dict name -> (n,) bool, optional
        Samples flagged near the singular set (orange corner).
    taus : sequence of float
    tau : float
        Threshold of the red outlines.

    Returns
    -------
    dict of PNG paths: ``samples``, ``mode_mixture``, ``diffusion_loss``.
    """
    out_dir = _check_out_dir(out_dir)
    flags = flags or {}
    names = list(images)
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 4.2 * nrow), squeeze=False)
    counts = {}
    for ax, name in zip(axes.flat, names):
        imgs = np.asarray(images[name])[:100]
        mixed = mixed_mask(classifier.predict_proba(imgs), tau)
        counts[name] = int(mixed.sum())
        image_grid(ax, imgs, mixed=mixed, flagged=None if name not in flags else flags[name][:100],
                   title=f"{name}: {mixed.sum()}/{len(imgs)} mixed (τ={tau})")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    out = {"samples": save_figure(fig, out_dir, "mnist_samples", dict(tau=tau, mixed_in_first_100=counts))["png"]}

    fig, ax = plt.subplots(figsize=(6, 4))
    curves = {}
    for name, r in rows.items():
        ys = [r["mode_mixture"][str(float(t))] for t in taus]
        curves[name] = ys
        ax.plot(taus, ys, marker="o", ls="--" if name in ("real digits", "AE reconstructions", "uniform noise")
                else "-", label=name)
    ax.set_xlabel("τ")
    ax.set_ylabel("mode-mixture rate")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    out["mode_mixture"] = save_figure(fig, out_dir, "mnist_mode_mixture_vs_tau",
                                      dict(taus=list(taus), rates=curves))["png"]

    L = np.asarray(diffusion_loss, dtype=np.float64)
    w = max(len(L) // 100, 1)
    smooth = np.convolve(L, np.ones(w) / w, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(len(smooth)) + w, smooth)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss (moving mean of {w})")
    ax.set_title("latent diffusion training loss", fontsize=9)
    pts = np.linspace(0, len(smooth) - 1, min(200, len(smooth))).astype(int)
    out["diffusion_loss"] = save_figure(fig, out_dir, "mnist_diffusion_loss",
                                        dict(window=w, steps=(pts + w).tolist(), loss=smooth[pts].tolist()))["png"]
    return out


def _between_modes(z, z_train, cell_component, k: int = 3) -> np.ndarray:
    """Latent points whose k nearest training codes lie in two or more detector modes -> (m,) bool."""
    d = torch.cdist(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(z_train, dtype=torch.float32))
    idx = d.topk(k, dim=1, largest=False).indices.numpy()
    comp = np.asarray(cell_component)[idx]
    return (comp != comp[:, :1]).any(1)


def mnist_mode_mixture_figure(out_dir, *, ae_epochs=20, clf_epochs=20, n_points=100, tau=0.2,
                              diffusion_steps=10000, ot_tol=0.03, ot_max_iter=100, method="ddpm",
                              data_dir=None, device=None, seed=0, cache_dir=None, verbose=False,
                              n_train=None) -> dict:
    """The seeds' Fig. 3 for OT and diffusion side by side, with a 2-D autoencoder latent.

    An :class:`~otgen.autoencoder.ImageAutoencoder` with ``latent_dim=2`` encodes the training
    digits (standardised codes, coloured by digit: ten clusters). ``n_points`` latent points are drawn
    from the extended OT map with the singular-set detector and from a latent diffusion model
    (``method``), overlaid on the clusters, decoded, and shown as a 10 x 10 grid. Decoded images that
    the classifier finds mixed (two classes with probability ``>= tau``) are outlined in red (red
    rings in the latent panel). Points flagged by the detector are marked orange: for OT, source
    points near the singular set (:meth:`~otgen.singular.SingularSetDetector.predict`); for
    diffusion, which has no source point, latent points whose 3 nearest training codes lie in two or
    more of the detector's modes.

    Artifacts (autoencoder, classifier, OT map, diffusion model) are trained or loaded with the
    cache of :func:`otgen.compare.compare_mnist` (the classifier is shared with it).

    Parameters
    ----------
    out_dir : path
        Receives ``mnist_mode_mixture.png`` / ``.json``.
    ae_epochs, clf_epochs, diffusion_steps : int
    n_points : int, default 100
    tau : float, default 0.2
    ot_tol : float, default 0.03
    ot_max_iter : int
    method : {"ddpm", "ddim"}
    data_dir, device, seed, cache_dir, verbose, n_train
        As in :func:`~otgen.compare.compare_mnist` (``cache_dir=None``: ``<out_dir>/cache``).

    Returns
    -------
    dict
        ``mixed`` ({"ot", "diffusion"}: counts of mixed decoded images), ``flagged`` (same keys),
        ``n_points``, ``tau``, ``n_modes_detected``, ``cache_hits``, the settings, ``png`` and ``json``.
    """
    import os

    from otgen.compare import _train_subset, fit_artifacts
    from otgen.data.mnist import load_mnist
    from otgen.singular import SingularSetDetector

    out_dir = _check_out_dir(out_dir)
    n_points = check_positive_int(n_points, "n_points")
    tau = check_positive_float(tau, "tau")
    if tau > 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    seed = _check_seed(seed)
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
    cache_dir = os.path.join(out_dir, "cache") if cache_dir is None else cache_dir
    train = _train_subset(load_mnist("train", data_dir=data_dir, seed=seed), n_train, seed)
    art = fit_artifacts(latent_dim=2, ae_epochs=check_positive_int(ae_epochs, "ae_epochs"),
                        clf_epochs=check_positive_int(clf_epochs, "clf_epochs"),
                        diffusion_steps=check_positive_int(diffusion_steps, "diffusion_steps"),
                        ot_tol=check_positive_float(ot_tol, "ot_tol"),
                        ot_max_iter=check_positive_int(ot_max_iter, "ot_max_iter"), data_dir=data_dir,
                        device=device, seed=seed, cache_dir=cache_dir, verbose=verbose, train=train)
    ae, clf, mean, scale, z_tr = art["ae"], art["clf"], art["mean"], art["scale"], art["z"]
    det = SingularSetDetector(seed=seed).fit(art["ot"])
    z_ot, info = OTGenerator(art["ot"], det, extension="piecewise-linear", seed=seed).sample(n_points)
    z_ot = z_ot.cpu().numpy()
    y_dm, _ = DiffusionGenerator(art["diffusion"], method, seed=seed).sample(n_points)
    z_dm = ((y_dm.cpu().numpy() - mean) / scale).astype(np.float32)
    comp = det.cell_component_
    if len(comp) != len(z_tr):               # duplicate codes were merged before the OT fit
        comp = comp[_nearest(z_tr, art["ot"].targets_.cpu().numpy())]
    panels = {"ot": (z_ot, info["near_singular"].cpu().numpy(), "OT (extended) + singular-set detector"),
              "diffusion": (z_dm, _between_modes(z_dm, z_tr, comp), f"diffusion ({method.upper()})")}

    fig, axes = plt.subplots(2, 2, figsize=(11, 11))
    labels = train[1]
    numbers = dict(n_points=n_points, tau=tau, seed=seed, method=method, ae_epochs=ae_epochs,
                   diffusion_steps=diffusion_steps, n_modes_detected=int(det.n_components_),
                   detector_threshold=float(det.threshold_), cache_hits=art["hits"], mixed={}, flagged={},
                   mixed_and_flagged={}, points={})
    lo, hi = np.percentile(z_tr, 0.5, 0) - 0.5, np.percentile(z_tr, 99.5, 0) + 0.5
    for row, (key, (z, flagged, title)) in enumerate(panels.items()):
        imgs = ae.decode(z * scale + mean)
        mixed = mixed_mask(clf.predict_proba(imgs), tau)
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


def _nearest(a, b) -> np.ndarray:
    """Index of the nearest row of b for each row of a."""
    d = torch.cdist(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32))
    return d.argmin(1).numpy()
