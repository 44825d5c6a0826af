"""Critical states of videos: the latent map with the singular set, and filmstrips of generated clips.

The seeds' argument (*A geometric view of Sora*, "The Absence of Critical States"): steady states of
a physical process form the modes of the data manifold, critical states (the juice spilling, the
ball crossing the barrier) lie on the boundary between them, where the Brenier map of semi-discrete
OT is singular. Sampling *on* the singular set and mapping to both sides gives the boundary clips;
a diffusion model smooths the boundary and tends to skip the transition (teleport) or blend the
two states.

* :func:`filmstrip` draws clips as rows of frames; :func:`comparison_figures` writes the figures of
  :func:`otgen.experiments.video.run` (filmstrips per generator, the latent map, loss curves).
* :func:`video_critical_states_figure` (``otgen figure video-critical-states``): the bistable ball,
  the latent map (PCA of the clip codes coloured by state, singular pairs, flagged source points'
  boundary targets, localised transitions of long clips) and filmstrips of the critical-state
  generation next to the diffusion transformer and the MLP DDPM.

References
----------
.. [1] X. Gu, "A geometric explanation of Sora's physical paradoxes", 2024.
.. [2] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau, X. Gu, "A geometric understanding of
   deep learning", Engineering 6 (2020).
.. [3] W. Peebles, S. Xie, "Scalable diffusion models with transformers", ICCV 2023.
"""

from __future__ import annotations

import numpy as np

from otgen._validation import check_positive_int
from otgen.experiments.video import CRITICAL, HEADLINE, plausibility
from otgen.figures._common import check_out_dir, loss_curve_figure, plt, save_figure

__all__ = ["filmstrip", "pca_2d", "latent_map", "comparison_figures", "video_critical_states_figure"]

_CLASS_COLOURS = {"transition": "limegreen", "teleport": "red", "blend": "orange", "empty": "magenta",
                  "barrier": "purple", "steady_A": None, "steady_B": None}


def filmstrip(ax, clips, *, n_clips: int = 3, n_frames: int | None = None, title: str = "", labels=None,
              failed=None):
    """Draw ``n_clips`` clips (n, T, C, H, W) as rows of frames on ``ax`` (white on black, 1 px gaps).

    ``labels`` (n,) of str, optional: written at the left of each row (e.g. the instrument's class),
    coloured for the bistable failure classes. ``failed`` (n,) of bool, optional: the rows the
    instruments reject are outlined in red.
    """
    x = np.asarray(clips, dtype=np.float32)
    if x.ndim != 5:
        raise ValueError(f"clips must have shape (n, T, C, H, W), got shape {x.shape}")
    x = x[:n_clips].mean(2)                                              # (m, T, H, W)
    m, T, H, W = x.shape
    T = T if n_frames is None else min(T, check_positive_int(n_frames, "n_frames"))
    mosaic = np.full((m * (H + 1) + 1, T * (W + 1) + 1), 0.35, np.float32)
    for i in range(m):
        for t in range(T):
            mosaic[1 + i * (H + 1):1 + i * (H + 1) + H, 1 + t * (W + 1):1 + t * (W + 1) + W] = x[i, t]
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, loc="left")
    if failed is not None:
        for i in np.flatnonzero(np.asarray(failed, bool)[:m]):
            ax.add_patch(plt.Rectangle((-0.5, i * (H + 1) + 0.5), T * (W + 1), H + 1, fill=False, edgecolor="red",
                                       lw=1.2))
    if labels is not None:
        for i in range(m):
            lab = str(labels[i])
            ax.text(-2, 1 + i * (H + 1) + H / 2, lab, ha="right", va="center", fontsize=6,
                    color=_CLASS_COLOURS.get(lab) or "black")


def pca_2d(z, fit=None):
    """Project rows of z (n, d) on the first two principal axes of ``fit`` (default z) -> (n, 2), (mean, axes)."""
    z = np.asarray(z, dtype=np.float64)
    if fit is None:
        ref = z
        mu = ref.mean(0)
        _, _, vt = np.linalg.svd(ref - mu, full_matrices=False)
        fit = (mu, vt[:2])
    mu, axes = fit
    return (z - mu) @ axes.T, fit


def latent_map(ax, z_train, labels, *, ot=None, detector=None, label_names=None, flagged=None, paths=None,
               critical=None, max_pairs: int = 400, seed: int = 0):
    """The latent map on ``ax``: PCA of the training codes coloured by label, plus the singular set.

    Parameters
    ----------
    z_train : (n, d) standardised codes; labels : (n,) int
    ot, detector : fitted OT map (targets in the same coordinates) and its singular-set detector;
        up to ``max_pairs`` adjacent pairs whose cells lie in different modes (the facets of the
        singular set that separate modes) are drawn as grey segments between their two targets.
    flagged : (m, d), optional
        Codes flagged by the detection (black rings).
    paths : dict, optional
        :func:`otgen.compare_video.localise_transitions` output: the first three paths are drawn,
        with the located crossing (star) and the window of the true transition (cross).
    critical : (k, d), optional
        Boundary targets of flagged source points (orange diamonds).

    Returns
    -------
    dict of the numbers drawn (projected points), for the JSON.
    """
    P, fit = pca_2d(z_train)
    labels = np.asarray(labels)
    numbers = {"explained_axes": fit[1].tolist()}
    for lab in np.unique(labels):
        sel = labels == lab
        name = label_names.get(int(lab), str(lab)) if label_names else str(lab)
        ax.scatter(P[sel, 0], P[sel, 1], s=4 if sel.mean() > 0.2 else 9, alpha=0.5, label=f"{name} ({sel.sum()})")
    if ot is not None and detector is not None and len(detector.singular_pairs_):
        Y = ot.targets_.detach().cpu().numpy()
        pairs = detector.pairs_
        pairs = pairs[detector.cell_component_[pairs[:, 0]] != detector.cell_component_[pairs[:, 1]]]
        numbers["mode_boundary_pairs"] = int(len(pairs))
        if len(pairs) > max_pairs:
            pairs = pairs[np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)]
        a, b = pca_2d(Y[pairs[:, 0]], fit)[0], pca_2d(Y[pairs[:, 1]], fit)[0]
        for r, (p, q) in enumerate(zip(a, b)):
            ax.plot([p[0], q[0]], [p[1], q[1]], color="0.5", lw=0.3, alpha=0.5, zorder=0,
                    label="adjacent cells in different modes" if r == 0 else None)
        numbers["singular_pairs_drawn"] = int(len(pairs))
    if critical is not None and len(critical):
        C = pca_2d(critical, fit)[0]
        ax.scatter(C[:, 0], C[:, 1], marker="D", s=14, facecolors="none", edgecolors="darkorange", lw=0.7,
                   label="boundary targets of flagged source points")
        numbers["critical"] = C.tolist()
    if flagged is not None and len(flagged):
        F = pca_2d(flagged, fit)[0]
        ax.scatter(F[:, 0], F[:, 1], s=30, facecolors="none", edgecolors="k", lw=0.6, label="flagged held-out clips")
        numbers["flagged"] = F.tolist()
    if paths is not None:
        numbers["paths"] = []
        for r in range(min(3, len(paths["paths"]))):
            Q = pca_2d(paths["paths"][r], fit)[0]
            ax.plot(Q[:, 0], Q[:, 1], "-", color="k", lw=0.8, alpha=0.8, label="long-clip latent path" if r == 0 else None)
            est, tf, w = paths["estimate"][r], paths["truth"][r], paths["window"]
            s0 = int(paths["starts"][0]) if "starts" in paths else 0    # first window's start (padding: < 0)
            item = {"path": Q.tolist(), "estimate": float(est), "truth": float(tf)}
            s_true = int(round(tf - w / 2)) - s0                        # window whose middle is the event
            if 0 <= s_true < len(Q):
                ax.scatter(*Q[s_true], marker="x", s=50, color="k", zorder=5,
                           label="true transition window" if r == 0 else None)
            if np.isfinite(est):
                pos = est - w / 2 - s0
                q = np.array([np.interp(pos, np.arange(len(Q)), Q[:, c]) for c in range(2)])
                ax.scatter(*q, marker="*", s=90, color="crimson", zorder=6,
                           label="located crossing" if r == 0 else None)
            numbers["paths"].append(item)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=6, loc="best", markerscale=1.5)
    return numbers


_LABEL_NAMES = {"bistable": {0: "steady A", 1: "steady B", 2: "transition"},
                "permanence": {3: "3 objects", 4: "4 objects"}, "moving-digits": None}


def _row_labels(dataset, r, n):
    if dataset == "bistable" and "classes" in r:
        return list(r["classes"][:n])
    if dataset == "permanence" and "counts" in r:
        ch = r["changed"][:n]
        return [f"{c} obj{', changes' if x else ''}" for c, x in zip(r["counts"][:n], ch)]
    if dataset == "moving-digits" and "mass_change" in r:
        return ["mass" if a else "jump" if b else "ok" for a, b in zip(r["mass_change"][:n], r["jump"][:n])]
    return None


def comparison_figures(run, out_dir, *, n_clips: int = 3) -> dict:
    """The figures of a video comparison (:func:`otgen.experiments.video.run`).

    Returns a dict of PNG paths: ``filmstrips`` (``n_clips`` clips per generator and floor, labelled
    with the instrument's reading), ``latent_map`` and ``diffusion_loss``.
    """
    out_dir = check_out_dir(out_dir)
    dataset, rows, art, det = run.settings.dataset, run.metrics["rows"], run.artifacts, run.detector
    names = list(run.samples)
    T = np.asarray(run.samples[names[0]]["clips"]).shape[1]
    fig, axes = plt.subplots(len(names), 1, figsize=(0.55 * T + 1.2, 0.72 * n_clips * len(names) + 0.3),
                             squeeze=False)
    key = HEADLINE[dataset]
    shown = {}
    for ax, name in zip(axes[:, 0], names):
        reading = plausibility(dataset, np.asarray(run.samples[name]["clips"])[:n_clips])
        labs = _row_labels(dataset, reading, n_clips)
        filmstrip(ax, run.samples[name]["clips"], n_clips=n_clips, labels=labs, failed=reading["implausible"],
                  title=f"{name}: {key.replace('_', ' ')} {rows[name][key]:.3f}")
        shown[name] = labs
    out = {"filmstrips": save_figure(fig, out_dir, f"video_{dataset}_filmstrips",
                                     dict(dataset=dataset, rates={k: rows[k][key] for k in names},
                                          shown=shown))["png"]}

    fig, ax = plt.subplots(figsize=(7, 6))
    d = run.extras.get("detection")
    flagged = None if d is None else np.asarray(d["z_test"])[np.asarray(d["flags"], bool)]
    crit = run.extras.get("critical")
    crit_z = None if not crit or not crit["n_points"] else run.samples[CRITICAL[0]]["z"]
    nums = latent_map(ax, art.z, art.train[2], ot=art.ot, detector=det, label_names=_LABEL_NAMES[dataset],
                      flagged=flagged, paths=run.extras.get("localisation"), critical=crit_z, seed=run.settings.seed)
    ax.set_title(f"{dataset}: clip codes (PCA), {det.n_components_} mode(s), "
                 f"{nums.get('mode_boundary_pairs', 0)} adjacent pairs across modes", fontsize=9)
    out["latent_map"] = save_figure(fig, out_dir, f"video_{dataset}_latent_map", nums)["png"]
    out["diffusion_loss"] = loss_curve_figure({"DiT": art.dit.history_["loss"], "MLP": art.mlp.history_["loss"]},
                                              out_dir, f"video_{dataset}_diffusion_loss")["png"]
    return out


def video_critical_states_figure(art, detector, sets: dict, paths: dict, out_dir, *, numbers=None, seed: int = 0) -> dict:
    """Critical states of the bistable ball: OT on the singular set vs the diffusion transformer.

    Draws the latent map (PCA of the standardised clip codes coloured by state, singular pairs,
    the boundary targets of the critical states, the localised paths of long clips) beside
    filmstrips of each set of clips, classified by :func:`otgen.metrics.bistable_clip_classes`.

    Parameters
    ----------
    art : otgen.experiments.video.VideoArtifacts
        Fitted on bistable clips.
    detector : SingularSetDetector
    sets : dict
        What :func:`otgen.experiments.video.critical_sets` returns: ``sets`` name -> clips
        (n, T, C, H, W), ``critical`` (its ``sets`` hold the boundary targets' codes).
    paths : dict
        :func:`otgen.experiments.video.localisation` of long clips.
    out_dir : path
    numbers : dict, optional
        More numbers for the JSON.

    Returns
    -------
    dict
        Class rates per set, detector and localisation summaries, ``png`` and ``json``.
    """
    out_dir = check_out_dir(out_dir)
    c = sets["critical"]
    z_crit = c["sets"][CRITICAL[0]]["z"] if c["n_points"] else None
    fig = plt.figure(figsize=(16, 9))
    gs = fig.add_gridspec(len(sets["sets"]), 2, width_ratios=[1, 1.7])
    ax = fig.add_subplot(gs[:, 0])
    nums = latent_map(ax, art.z, art.train[2], ot=art.ot, detector=detector, label_names=_LABEL_NAMES["bistable"],
                      paths=paths, critical=z_crit, seed=seed)
    ax.set_title(f"bistable clip codes (PCA): {detector.n_components_} modes, {nums.get('mode_boundary_pairs', 0)} "
                 "adjacent pairs across modes", fontsize=9)
    rates = {}
    for r, (name, clips) in enumerate(sets["sets"].items()):
        p = plausibility("bistable", clips)
        rates[name] = {k: v for k, v in p.items() if k.endswith("_rate")}
        filmstrip(fig.add_subplot(gs[r, 1]), clips, n_clips=4, labels=p["classes"][:4], failed=p["implausible"],
                  title=f"{name}: transitions {p['transition_rate']:.2f}, teleports {p['teleport_rate']:.2f}, "
                        f"blends {p['blend_rate']:.2f} (n={len(clips)})")
    numbers = dict(numbers or {}, rates=rates, data_transition_rate=c["data_rate"], n_critical_points=c["n_points"],
                   flagged_fraction=c["flagged_fraction"], n_modes=int(detector.n_components_),
                   threshold=float(detector.threshold_),
                   localisation={k: paths[k] for k in ("mean_abs_error", "median_abs_error", "within_tol", "located",
                                                       "n_clips")}, latent_map=nums)
    return save_figure(fig, out_dir, "video_critical_states", numbers)
