"""Video: semi-discrete OT against a Sora-style diffusion transformer on clip latents (critical states).

:func:`compare_video` trains (or loads from a cache) a :class:`~otgen.autoencoder.video.VideoAutoencoder`
on clips with known physics (:mod:`otgen.data.video`), encodes them to one latent vector per
clip, and fits on the *same* codes

* semi-discrete OT (:class:`~otgen.transport.SemiDiscreteOT` from the uniform cube to the
  standardised codes) with its :class:`~otgen.singular.SingularSetDetector`, sampled by the
  boundary-respecting :class:`~otgen.generate.OTGenerator` (AE-OT piecewise-linear extension
  inside a mode, never across the singular set) [1]_;
* the Sora-style baseline: a diffusion transformer over the code's latent tokens
  (:class:`~otgen.diffusion.LatentDiffusion` with ``denoiser="dit"``: self-attention over
  ``latent_tokens`` tokens, adaLN-Zero timestep conditioning [3]_ [4]_), sampled with DDPM [2]_
  and DDIM [5]_;
* the MLP latent DDPM on the flat code vectors.

Every generator draws ``n_samples`` latent points; they are decoded by the same autoencoder and
read by instruments that look at the *pixels*, not at the generator's latent
(:mod:`otgen.metrics.video`):

* ``bistable`` (a ball in a double well, rare critical transitions): the clip classes of
  :func:`~otgen.metrics.bistable_clip_classes` — steady, continuous transition, *teleport* (A to B
  with no frame in between: the "juice" that is in the cup and then on the table) and *blend*
  (the ball in both wells at once);
* ``permanence`` (3 or 4 moving squares): :func:`~otgen.metrics.count_consistency`, the fraction
  of clips whose object count changes outside occlusions ("three puppies become four"), and the
  histogram of per-clip counts;
* ``moving-digits``: *mass change* (the digit's ink, the sum of its pixels, varies by more than
  25 % of the clip's median between frames — a moving digit keeps its ink) and *jump* (the ink
  centroid moves more than twice the largest speed of the data, ``size / 8`` px, in one frame).

The floors are the same instruments on held-out real clips and on their AE reconstructions
:math:`D(E(x))`, the best any generator in this latent space can do.

On ``bistable`` three more measurements read the singular set (:mod:`otgen.singular.paths`):

* detection: held-out real clips are encoded; a clip is flagged when its nearest OT target is a
  cell of which at least half of the facet area (the detector's sampled facet counts) is
  singular, i.e. a cell that lies *between* modes rather than inside one (``detect_rule``;
  ``"incident"``, any singular facet, is reported too); precision and recall at finding the
  transition clips;
* localisation: long clips with one transition each are cut into sliding windows of the
  training clip length ``L``; the windows' codes form a latent path, and
  :func:`~otgen.singular.locate_crossings` (with ``window_offset = L / 2``) returns the frame at
  which the path leaves its first mode for its last, compared with the true transition frame;
* critical-state generation: source points that the detector flags (:meth:`predict`) are mapped
  to the two boundary cells they touch, one on each side of the singular set
  (:func:`~otgen.singular.singular_sides`: the extreme points of :math:`\\partial u_h(x)`); those
  targets are decoded and classified. The midpoint of the two (a point of the segment
  :math:`\\partial u_h(x)` that lies *off* the data) is decoded too, as the contrast: it is what a
  generator that interpolates across the boundary produces.

Latent preprocessing as in :mod:`otgen.compare`: OT works on standardised codes
:math:`z = (y - m) / s`; the diffusion models standardise internally and return raw codes.

References
----------
.. [1] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [2] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
.. [3] W. Peebles, S. Xie, "Scalable diffusion models with transformers", ICCV 2023.
.. [4] T. Brooks et al., "Video generation models as world simulators", OpenAI, 2024.
.. [5] J. Song, C. Meng, S. Ermon, "Denoising diffusion implicit models", ICLR 2021.
.. [6] X. Gu, "A geometric explanation of Sora's physical paradoxes", 2024.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
import warnings

import numpy as np
import torch

from otgen._validation import (ConvergenceWarning, check_choice, check_positive_float, check_positive_int,
                               resolve_device)
from otgen.compare import (_check_blend_rule, _copy_rate, _fmt, _loss_plateau, _nn_median, _timed_sample, load_or_fit,
                           standardize_codes)
from otgen.generate import DiffusionGenerator, OTGenerator, _check_seed

__all__ = ["compare_video", "fit_video_artifacts", "fit_detector", "video_data", "plausibility", "digit_plausibility",
           "detection_scores", "localise_transitions", "critical_states", "DATASETS", "AE_DEFAULTS", "AE_DATASET_DEFAULTS",
           "AE_EPOCHS", "ae_settings", "DIT_DEFAULTS"]

DATASETS = ("bistable", "moving-digits", "permanence")
GENERATORS = ("OT (extended)", "OT (plain)", "DiT DDPM", "DiT DDIM", "MLP DDPM")
CRITICAL = ("OT singular (both sides)", "OT singular (midpoint)")
FLOORS = ("real clips (held-out)", "AE reconstructions")
#: VideoAutoencoder settings used by :func:`compare_video` (public constructor arguments).
AE_DEFAULTS = dict(latent_tokens=4, token_dim=4, tubelet=(4, 8, 8), width=64, depth=2, heads=4, mlp_ratio=2,
                   batch_size=16, lr=2e-3, loss="bce")
#: Per-dataset autoencoder settings on top of :data:`AE_DEFAULTS` (measured, seed 0, 2,000 training clips,
#: instrument on 200 held-out reconstructions). Permanence (3-4 squares moving independently: at least 16
#: unordered numbers per clip): with the shared defaults (16-d code) the held-out MSE is 0.067 and 0.99 of the
#: reconstructions change their object count; a 32-d code, the four symmetries of the data as augmentation
#: (without them train MSE 0.029 vs held-out 0.053: memorised) and 48 epochs give MSE 0.035 and 0.78.
#: Moving digits: the convolutional read-out and time reversal give MSE 0.0086 and 0.125 implausible
#: (shared defaults: 0.0104 and 0.356). Bistable keeps the shared defaults (MSE 0.0021).
AE_DATASET_DEFAULTS = {"bistable": {}, "moving-digits": dict(readout="conv", symmetries=("time",)),
                       "permanence": dict(latent_tokens=8, symmetries=("time", "hflip", "vflip", "transpose"))}
#: Autoencoder epochs of :func:`compare_video` when ``ae_epochs`` is None.
AE_EPOCHS = {"bistable": 24, "moving-digits": 24, "permanence": 48}


def ae_settings(dataset: str, ae_kwargs=None) -> dict:
    """VideoAutoencoder settings of ``dataset``: :data:`AE_DEFAULTS`, then :data:`AE_DATASET_DEFAULTS`, then ``ae_kwargs``."""
    check_choice(dataset, "dataset", DATASETS)
    if ae_kwargs is not None and not isinstance(ae_kwargs, dict):
        raise TypeError(f"ae_kwargs must be a dict or None, got {type(ae_kwargs).__name__}")
    return dict(AE_DEFAULTS, **AE_DATASET_DEFAULTS[dataset], **(ae_kwargs or {}))


#: LatentDiffusion(denoiser="dit") settings (token width, blocks, heads, MLP ratio, time embedding).
DIT_DEFAULTS = dict(hidden=128, depth=3, heads=4, mlp_ratio=2, time_embed_dim=64)
_MASS_CHANGE = 0.25          # moving digits: relative ink change that counts as not conserved
_JUMP_SPEEDS = 2.0           # moving digits: a centroid step above this many top speeds is a jump
_DETECT_RULES = ("minor-mode", "fraction", "incident")


# ----------------------------------------------------------------------------- data

def _code_version(*modules) -> str:
    """Hash of the source of the given modules (cache keys change when the code that fits changes)."""
    h = hashlib.sha1()
    for m in modules:
        try:
            h.update(inspect.getsource(m).encode())
        except (OSError, TypeError):
            h.update(m.__name__.encode())
    return h.hexdigest()[:10]


def video_data(dataset: str, n: int, seed: int = 0, split: str = "train"):
    """Clips and labels of a dataset at its default size (16 frames of 32 x 32, grayscale).

    Parameters
    ----------
    dataset : {"bistable", "moving-digits", "permanence"}
    n : int
    seed : int
    split : {"train", "test"}
        For moving digits, which MNIST digits are drawn (held-out clips use the test digits).

    Returns
    -------
    clips : torch.Tensor, shape (n, 16, 1, 32, 32)
    labels : dict of numpy arrays (see :mod:`otgen.data.video`)
    label : ndarray of int64, shape (n,)
        One label per clip for colouring: bistable state (0 A, 1 B, 2 transition), number of
        objects, or the digit.
    """
    from otgen.data.video import bistable, moving_digits, permanence

    check_choice(dataset, "dataset", DATASETS)
    if dataset == "bistable":
        clips, labels = bistable(n, seed=seed)
        label = labels["state"]
    elif dataset == "permanence":
        clips, labels = permanence(n, seed=seed)
        label = labels["n_objects"]
    else:
        clips, labels = moving_digits(n, seed=seed, split=split)
        label = labels["digit"][:, 0]
    return clips, labels, np.asarray(label, dtype=np.int64)


# ----------------------------------------------------------------------------- instruments

def digit_plausibility(clips, max_speed: float | None = None) -> dict:
    """Physical plausibility of moving-digit clips, read from the pixels.

    With :math:`m_t = \\sum_{px} x_t` the ink of frame t and :math:`c_t` its ink centroid, a clip

    * does not conserve mass when :math:`\\max_t |m_t - \\tilde m| > 0.25\\,\\tilde m`
      (:math:`\\tilde m` the clip's median ink; a moving digit keeps its ink, the data's clips
      change by rounding only);
    * jumps when :math:`\\max_t |c_{t+1} - c_t| > 2 v_{\\max}`, with :math:`v_{\\max}` the largest
      speed of :func:`otgen.data.video.moving_digits` (``size / 16`` px per frame).

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W), values in [0, 1]
    max_speed : float, optional
        :math:`v_{\\max}` in pixels per frame (default ``W / 16``).

    Returns
    -------
    dict
        ``mass_change_rate``, ``jump_rate``, ``empty_rate`` (a frame with almost no ink, under
        5 % of the clip's largest), ``implausible_rate`` (any of them), and per clip
        ``mass_change``, ``jump``, ``empty`` (bool (n,)).
    """
    from otgen.metrics.video import _frames

    f = _frames(clips).astype(np.float64)                                # (n, T, H, W)
    n, T, H, W = f.shape
    vmax = W / 16 if max_speed is None else check_positive_float(max_speed, "max_speed")
    f = np.clip(f, 0.0, 1.0)
    mass = f.sum((2, 3))                                                # (n, T)
    med = np.median(mass, axis=1)
    safe = np.where(mass > 1e-9, mass, 1.0)
    cy = (f.sum(3) * np.arange(H)).sum(2) / safe
    cx = (f.sum(2) * np.arange(W)).sum(2) / safe
    empty = (mass < 0.05 * mass.max(1, keepdims=True)).any(1) | (mass.max(1) < 1e-6)
    change = (np.abs(mass - med[:, None]) > _MASS_CHANGE * np.maximum(med[:, None], 1e-9)).any(1)
    step = np.hypot(np.diff(cx, axis=1), np.diff(cy, axis=1)) if T > 1 else np.zeros((n, 0))
    jump = (step > _JUMP_SPEEDS * vmax).any(1) & ~empty
    bad = change | jump | empty
    return {"mass_change_rate": float(change.mean()), "jump_rate": float(jump.mean()),
            "empty_rate": float(empty.mean()), "implausible_rate": float(bad.mean()),
            "mass_change": change, "jump": jump, "empty": empty}


def plausibility(dataset: str, clips) -> dict:
    """The pixel instruments of ``dataset`` on clips (n, T, C, H, W): rates (floats) and per-clip arrays.

    ``bistable``: :func:`~otgen.metrics.bistable_clip_classes` rates plus ``implausible_rate``
    (teleport + blend + empty + barrier) and ``classes`` (n,). ``permanence``:
    :func:`~otgen.metrics.count_consistency` ``changed_rate`` plus the fractions of clips whose
    modal count is 3, 4 or anything else (``count_3``, ``count_4``, ``count_other``),
    ``implausible_rate`` (changed or other) and ``changed`` (n,). ``moving-digits``:
    :func:`digit_plausibility`.
    """
    from otgen.metrics.video import bistable_clip_classes, count_consistency

    check_choice(dataset, "dataset", DATASETS)
    x = np.clip(np.asarray(clips, dtype=np.float32), 0.0, 1.0)
    if dataset == "bistable":
        r = bistable_clip_classes(x)
        out = {k: float(v) for k, v in r.items() if k.endswith("_rate")}
        out["implausible_rate"] = out["teleport_rate"] + out["blend_rate"] + out["empty_rate"] + out["barrier_rate"]
        out["classes"] = r["classes"]
        return out
    if dataset == "permanence":
        c = count_consistency(x)
        modal = c["per_clip_counts"]
        other = ~np.isin(modal, (3, 4))
        return {"changed_rate": c["changed_rate"], "count_3": float((modal == 3).mean()),
                "count_4": float((modal == 4).mean()), "count_other": float(other.mean()),
                "implausible_rate": float((c["changed"] | other).mean()), "changed": c["changed"],
                "counts": modal}
    return digit_plausibility(x)


# ----------------------------------------------------------------------------- artifacts

def fit_video_artifacts(dataset: str, train_clips, *, ae_epochs: int, dit_steps: int, mlp_steps: int, ot_tol: float,
                        ot_max_iter: int, ae_kwargs=None, dit_kwargs=None, device=None, seed: int = 0,
                        cache_dir=None, verbose: bool = True, data_key=None, ae_extra: int = 0) -> dict:
    """Train or load the video autoencoder, the OT map and the two latent diffusion models.

    Parameters
    ----------
    dataset : str
        Only part of the cache key.
    train_clips : tensor (n, T, C, H, W)
    ae_epochs, dit_steps, mlp_steps : int
    ot_tol : float
    ot_max_iter : int
    ae_kwargs, dit_kwargs : dict, optional
        Override :func:`ae_settings` (``dataset``) / :data:`DIT_DEFAULTS`.
    device, seed, cache_dir, verbose
        As in :func:`compare_video`.
    data_key : dict, optional
        What determines ``train_clips`` (for the cache key); default ``dataset``, n and ``seed``.
    ae_extra : int, default 0
        Bistable only: the autoencoder (not the generators) also trains on this many extra
        transition clips (:func:`otgen.data.video.bistable` with ``transition_rate=1``, seed
        ``seed + 3``), so that the shared latent space can represent the rare critical states.

    Returns
    -------
    dict
        ``ae``, ``ot``, ``dit``, ``mlp``, ``codes`` (n, d) raw train codes, ``z`` standardised,
        ``mean``, ``scale``, ``unique_index`` (n,) the OT target of each train clip,
        ``hits`` and ``fit_seconds`` per artifact.
    """
    import otgen.autoencoder.training as ae_training
    import otgen.autoencoder.video as ae_video
    import otgen.diffusion.latent as dm_latent
    import otgen.diffusion.training as dm_training
    import otgen.diffusion.transformer as dm_transformer
    from otgen.autoencoder.video import VideoAutoencoder
    from otgen.diffusion import LatentDiffusion
    from otgen.transport import SemiDiscreteOT

    dev = resolve_device(device)
    ae_kw = ae_settings(dataset, ae_kwargs)
    dit_kw = dict(DIT_DEFAULTS, **(dit_kwargs or {}))
    data = dict(data_key or {"dataset": dataset, "n": int(len(train_clips)), "seed": seed},
                clip_shape=list(train_clips.shape[1:]))
    hits, secs = {}, {}
    ae_extra = check_positive_int(ae_extra, "ae_extra", minimum=0)
    if ae_extra and dataset != "bistable":
        raise ValueError(f"ae_extra (extra transition clips for the autoencoder) is a bistable setting, got "
                         f"ae_extra={ae_extra} for dataset {dataset!r}")
    ae_set = dict(data, ae=dict(ae_kw, epochs=ae_epochs), seed=seed, ae_extra=ae_extra,
                  code=_code_version(ae_video, ae_training))

    def fit_ae():
        x = train_clips
        if ae_extra:
            from otgen.data.video import bistable
            x = torch.cat([torch.as_tensor(train_clips), bistable(ae_extra, transition_rate=1.0, seed=seed + 3)[0]])
        return VideoAutoencoder(epochs=ae_epochs, device=dev, seed=seed, verbose=verbose, **ae_kw).fit(x)

    ae, hits["autoencoder"], secs["autoencoder"] = load_or_fit(
        cache_dir, "video-autoencoder", ae_set, fit_ae,
        lambda o, p: o.save(p), lambda p: VideoAutoencoder.load(p, device=dev, verbose=verbose))
    codes = np.asarray(ae.encode(train_clips), dtype=np.float32)                    # (n, d)
    z, mean, scale = standardize_codes(codes)
    zu, inv, counts = np.unique(z, axis=0, return_inverse=True, return_counts=True)   # the solver needs distinct targets
    weights = None if len(zu) == len(z) else counts / counts.sum()
    targets = zu if weights is not None else z
    unique_index = inv.reshape(-1) if weights is not None else np.arange(len(z))
    ot_set = dict(ae_set, kind="ot", source="uniform", tol=ot_tol, max_iter=ot_max_iter)

    def fit_ot():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            ot = SemiDiscreteOT(source="uniform", tol=ot_tol, max_iter=ot_max_iter, device=dev, seed=seed,
                                verbose=verbose).fit(targets, weights)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return ot

    ot, hits["ot"], secs["ot"] = load_or_fit(cache_dir, "video-ot", ot_set, fit_ot, lambda o, p: o.save(p),
                                             lambda p: SemiDiscreteOT.load(p, device=dev))
    dm_code = _code_version(dm_latent, dm_training, dm_transformer)
    L = int(ae_kw["latent_tokens"])
    dit_set = dict(ae_set, kind="dit", n_steps=dit_steps, n_tokens=L, dit=dit_kw, dcode=dm_code)
    dit, hits["dit"], secs["dit"] = load_or_fit(
        cache_dir, "video-dit", dit_set,
        lambda: LatentDiffusion(denoiser="dit", n_tokens=L, n_steps=dit_steps, device=dev, seed=seed,
                                verbose=verbose, **dit_kw).fit(codes),
        lambda o, p: o.save(p), lambda p: LatentDiffusion.load(p, device=dev))
    mlp_set = dict(ae_set, kind="mlp", n_steps=mlp_steps, dcode=dm_code)
    mlp, hits["mlp"], secs["mlp"] = load_or_fit(
        cache_dir, "video-mlp", mlp_set,
        lambda: LatentDiffusion(denoiser="mlp", n_steps=mlp_steps, device=dev, seed=seed, verbose=verbose).fit(codes),
        lambda o, p: o.save(p), lambda p: LatentDiffusion.load(p, device=dev))
    dit.verbose = mlp.verbose = verbose
    return dict(ae=ae, ot=ot, dit=dit, mlp=mlp, codes=codes, z=z, mean=mean, scale=scale,
                unique_index=unique_index, hits=hits, fit_seconds=secs)


# ----------------------------------------------------------------------------- singular-set measurements

def fit_detector(ot, angle_threshold="persistence", *, min_size: float = 0.05, seed: int = 0,
                 angle_quantile=None, mode_rule: str = "component"):
    """The singular-set detector of ``ot`` with the threshold rule ``angle_threshold``.

    ``"persistence"`` (default): :func:`~otgen.singular.persistence_threshold` of a first fit (the
    angle threshold at which the major modes — at least ``min_size`` of the mass — persist longest),
    then a detector with that number. ``None`` / ``"gap"`` / ``"ratio"`` / ``"quantile"`` / a float:
    passed to :class:`~otgen.singular.SingularSetDetector`. ``angle_quantile`` (a number in (0, 1)),
    when given, replaces the rule by the threshold at that quantile of the neighbour angles;
    ``mode_rule`` (``"component"`` or ``"facet"``) is the detector's blending rule.

    Returns
    -------
    detector : SingularSetDetector
    """
    from otgen.singular import SingularSetDetector, persistence_threshold

    angle_quantile, mode_rule = _check_threshold_rule(angle_threshold, angle_quantile, mode_rule)
    kw = dict(seed=seed, mode_rule=mode_rule)
    if angle_quantile is not None:
        return SingularSetDetector(angle_threshold="quantile", quantile=angle_quantile, **kw).fit(ot)
    if isinstance(angle_threshold, str) and angle_threshold == "persistence":
        first = SingularSetDetector(**kw).fit(ot)
        tau = persistence_threshold(first, min_size, weights=ot.weights_.detach().cpu().numpy())
        if not np.isfinite(tau):
            return first                                   # one mode: no singular set (threshold inf)
        return SingularSetDetector(angle_threshold=min(tau, float(np.pi)), **kw).fit(ot)
    return SingularSetDetector(angle_threshold=angle_threshold, **kw).fit(ot)


def _check_threshold_rule(angle_threshold, angle_quantile=None, mode_rule="component"):
    """Validate the detector options; returns (angle_quantile, mode_rule)."""
    from otgen.singular import SingularSetDetector
    angle_quantile, mode_rule = _check_blend_rule(angle_quantile, mode_rule)
    if isinstance(angle_threshold, str) and angle_threshold == "persistence":
        return angle_quantile, mode_rule
    if angle_quantile is not None:
        raise ValueError(f"give angle_threshold (got {angle_threshold!r}) or angle_quantile "
                         f"(got {angle_quantile!r}), not both")
    SingularSetDetector(angle_threshold=angle_threshold)._check_settings()
    return angle_quantile, mode_rule


def detection_scores(flags, truth) -> dict:
    """Precision, recall and F1 of boolean ``flags`` (n,) at finding ``truth`` (n,)."""
    f, t = np.asarray(flags, bool), np.asarray(truth, bool)
    if f.shape != t.shape or f.ndim != 1:
        raise ValueError(f"flags and truth must be 1-D of the same length, got shapes {f.shape} and {t.shape}")
    tp = int((f & t).sum())
    prec = tp / int(f.sum()) if f.any() else float("nan")
    rec = tp / int(t.sum()) if t.any() else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if f.any() and t.any() and (prec + rec) > 0 else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "flagged": int(f.sum()), "positives": int(t.sum()),
            "true_positives": tp, "n": int(len(t)), "flagged_rate": float(f.mean()) if len(f) else float("nan")}


def localise_transitions(ae, long_clips, transition_frame, ot, detector, mean, scale, *, window: int,
                         k: int = 1, tolerance: int = 2) -> dict:
    """Encode sliding windows of long clips, follow the latent paths, locate the mode change.

    The clips are padded with ``window // 2`` copies of their first and last frames, so that every
    frame is the middle of a window (a transition close to an end is still seen with both steady
    states around it); window ``s`` (frames ``s .. s + window - 1``) gets the time ``s + window / 2``
    and :func:`~otgen.singular.locate_crossings` interpolates the crossing between windows.

    Parameters
    ----------
    ae : VideoAutoencoder
        Fitted on clips of ``window`` frames.
    long_clips : tensor (n, T, C, H, W)
    transition_frame : array (n,)
        True first frame past the barrier.
    ot, detector
        Fitted on standardised codes ``(y - mean) / scale``.
    window : int
    k : int
        Nearest targets voting for the mode of a window.
    tolerance : int
        Frames within which a located crossing counts as correct.

    Returns
    -------
    dict
        ``estimate`` (n,) float (NaN when the path does not change mode), ``error`` (n,) float,
        ``mean_abs_error``, ``median_abs_error`` (over located clips), ``within_tol`` (fraction of
        all clips located within ``tolerance`` frames), ``located`` (fraction whose path changes
        mode), ``n_changes_mean``, ``paths`` (n, m, d) standardised window codes, ``starts``.
    """
    from otgen.singular.paths import encode_windows, locate_crossings

    codes, starts = encode_windows(ae, long_clips, window, pad=window // 2)
    n, m, d = codes.shape
    zp = standardize_codes(codes.reshape(n * m, d), mean, scale)[0].reshape(n, m, d)
    r = locate_crossings(zp, ot, detector, times=starts + window / 2, k=k)
    tf = np.asarray(transition_frame, dtype=np.float64)
    err = np.abs(r["time"] - tf)
    ok = np.isfinite(err)
    return {"estimate": r["time"], "truth": tf, "error": err,
            "mean_abs_error": float(err[ok].mean()) if ok.any() else float("nan"),
            "median_abs_error": float(np.median(err[ok])) if ok.any() else float("nan"),
            "within_tol": float((ok & (err <= tolerance)).mean()), "tolerance": int(tolerance),
            "located": float(ok.mean()), "n_changes_mean": float(r["n_changes"].mean()),
            "n_clips": int(n), "window": int(window), "n_frames": int(long_clips.shape[1]),
            "paths": zp, "starts": starts, "modes": r["modes"]}


def critical_states(ot, detector, n_points: int, *, seed: int = 0, max_draw: int = 2**20, batch: int = 2**16):
    """Source points on the singular set and the two boundary targets each one touches.

    Draws source points in batches of ``batch`` (at most ``max_draw``), keeps those that
    ``detector.predict`` flags *and* whose top-k cells lie in two different modes
    (:func:`~otgen.singular.singular_sides`), until ``n_points`` are kept.

    Returns
    -------
    dict
        ``X`` (m, d) kept source points (m <= n_points), ``i``, ``j`` (m,) the boundary cells on the
        two sides, ``drawn`` (int) source points drawn, ``flagged_fraction`` (float, flagged by
        ``predict``), ``kept_fraction`` (float, flagged with two modes among the top-k),
        ``seconds`` (float).
    """
    from otgen.singular.paths import singular_sides
    from otgen.transport.sources import sample_source

    n_points = check_positive_int(n_points, "n_points")
    t0 = time.perf_counter()
    d = ot.targets_.shape[1]
    Xs, I, J = [], [], []
    drawn = n_flag = n_kept = 0
    while n_kept < n_points and drawn < max_draw:
        X = sample_source(ot.source, batch, d, seed=seed + 7 + drawn, dtype=ot.targets_.dtype,
                          device=ot.targets_.device)
        drawn += batch
        f = np.asarray(detector.predict(X), bool)
        n_flag += int(f.sum())
        if not f.any():
            continue
        Xf = X[torch.as_tensor(f, device=X.device)]
        i, j = singular_sides(Xf, ot, detector)
        keep = j >= 0
        Xs.append(Xf[torch.as_tensor(keep, device=X.device)])
        I.append(i[keep])
        J.append(j[keep])
        n_kept += int(keep.sum())
    if Xs:
        X, i, j = torch.cat(Xs)[:n_points], np.concatenate(I)[:n_points], np.concatenate(J)[:n_points]
    else:
        X, i, j = torch.zeros(0, d, dtype=ot.targets_.dtype), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return {"X": X, "i": i, "j": j, "drawn": int(drawn), "flagged_fraction": n_flag / drawn,
            "kept_fraction": n_kept / drawn, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- report

_COLUMNS = {
    "bistable": [("steady", "steady_rate"), ("transition", "transition_rate"), ("teleport", "teleport_rate"),
                 ("blend", "blend_rate"), ("empty", "empty_rate"), ("barrier", "barrier_rate"),
                 ("implausible", "implausible_rate")],
    "permanence": [("count changes", "changed_rate"), ("3 objects", "count_3"), ("4 objects", "count_4"),
                   ("other count", "count_other"), ("implausible", "implausible_rate")],
    "moving-digits": [("mass change", "mass_change_rate"), ("jump", "jump_rate"), ("empty frame", "empty_rate"),
                      ("implausible", "implausible_rate")],
}


def _table(dataset, rows) -> str:
    cols = _COLUMNS[dataset]
    head = ["generator"] + [c for c, _ in cols] + ["SW latent", "copies", "samples/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name] + [_fmt(r.get(k)) for _, k in cols]
        cells += [_fmt(r.get("sw_latent")), _fmt(r.get("copy_rate")),
                  "-" if r.get("samples_per_s") is None else f"{r['samples_per_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(a, b, lower_is_better=True):
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return "not comparable"
    if a == b:
        return "equal to"
    return ("below" if a < b else "above") if lower_is_better else ("above" if a > b else "below")


def _discussion(m: dict) -> list:
    ds, rows = m["dataset"], m["rows"]
    ot, dd, di, ml = rows["OT (extended)"], rows["DiT DDPM"], rows["DiT DDIM"], rows["MLP DDPM"]
    real, rec = rows["real clips (held-out)"], rows["AE reconstructions"]
    key = {"bistable": "implausible_rate", "permanence": "changed_rate", "moving-digits": "implausible_rate"}[ds]
    name = {"bistable": "implausible (teleport + blend + empty + barrier)",
            "permanence": "count-change ('three puppies become four')",
            "moving-digits": "implausible (mass change / jump / empty)"}[ds]
    lines = [f"- {name} rate: OT (extended) {_fmt(ot[key])}, OT (plain) {_fmt(rows['OT (plain)'][key])}, "
             f"DiT DDPM {_fmt(dd[key])}, DiT DDIM {_fmt(di[key])}, MLP DDPM {_fmt(ml[key])}; held-out real clips "
             f"{_fmt(real[key])}, their AE reconstructions {_fmt(rec[key])} (the floor of this latent space). "
             f"OT (extended) is {_verdict(ot[key], dd[key])} the DiT (DDPM) and {_verdict(ot[key], ml[key])} the "
             "MLP DDPM on this number."]
    if rec[key] is not None and rec[key] > 0.2:
        lines.append(f"- Caveat: {_fmt(rec[key])} of the autoencoder's own reconstructions of real clips already fail this "
                     "instrument, so the generator rows mostly measure the autoencoder, not the generators (one "
                     f"binomial standard error at n = {m['settings']['n_samples']} is up to "
                     f"{_fmt(float(np.sqrt(0.25 / m['settings']['n_samples'])), 3)}).")
    if ds == "bistable":
        lines.append(f"- Transitions among the samples: OT (extended) {_fmt(ot['transition_rate'])}, DiT DDPM "
                     f"{_fmt(dd['transition_rate'])}, DiT DDIM {_fmt(di['transition_rate'])}, MLP DDPM "
                     f"{_fmt(ml['transition_rate'])}; data (train) {_fmt(m['data']['train_transition_rate'])}, "
                     f"held-out reconstructions {_fmt(rec['transition_rate'])}. Teleports: OT {_fmt(ot['teleport_rate'])}"
                     f", DiT DDPM {_fmt(dd['teleport_rate'])}; blends: OT {_fmt(ot['blend_rate'])}, DiT DDPM "
                     f"{_fmt(dd['blend_rate'])}.")
        tr = m["data"].get("reconstructed_transitions")
        if tr is not None:
            extra = m["settings"]["ae_extra"]
            lines.append(f"- Autoencoder floor for transitions: of the held-out transition clips, {_fmt(tr)} are still "
                         "classified as transitions after D(E(x)) (the rest become teleports or blends in the "
                         "reconstruction itself; no generator in this latent space can do better). "
                         + (f"The autoencoder trained on {extra} extra transition clips besides the {m['settings']['n_train']} "
                            "training clips (the generators only on the training clips' codes): at the data's 5 % "
                            "rate alone it sees too few transitions to reconstruct them." if extra else
                            "The autoencoder saw the transitions at the data's rate only."))
    if ds == "permanence":
        lines.append(f"- Object counts (modal per clip): OT (extended) 3: {_fmt(ot['count_3'])} / 4: "
                     f"{_fmt(ot['count_4'])} / other: {_fmt(ot['count_other'])}; DiT DDPM {_fmt(dd['count_3'])} / "
                     f"{_fmt(dd['count_4'])} / {_fmt(dd['count_other'])}; real {_fmt(real['count_3'])} / "
                     f"{_fmt(real['count_4'])} / {_fmt(real['count_other'])}.")
    lines.append(f"- OT (plain) outputs training codes only (copies {_fmt(rows['OT (plain)']['copy_rate'])}), and the "
                 f"extended map blends only within a mode (copies {_fmt(ot['copy_rate'])}); read them against the "
                 "reconstruction floor, not as novel clips. SW latent is the sliced Wasserstein distance to the "
                 "held-out codes (standardised).")
    det = m["detector"]
    lines.append(f"- Detector: {det['n_components']} mode(s) among {m['ot']['n_targets']} cells, threshold "
                 f"{_fmt(det['threshold'])} rad ({det['angle_threshold']}; mode rule {det['mode_rule']}), "
                 f"{det['n_singular_pairs']} singular of "
                 f"{det['n_pairs']} adjacent pairs; largest modes hold {det['largest_modes']} cells.")
    if "detection" in m:
        lines.append("- How the threshold is chosen: the detector's gap rule looks for a gap in the sorted angles "
                     "above 5 x their median; in this 16-d latent the within-mode angles reach 2-3 x the median and "
                     "the between-mode ones start right above, so it finds none. The persistence rule "
                     "(otgen.singular.persistence_threshold) takes the middle (log scale) of the longest range of "
                     "thresholds over which the number of major modes (each >= "
                     f"{_fmt(m['settings']['min_size'], 2)} of the mass) stays >= 2.")
    if "detection" in m:
        d = m["detection"]["primary"]
        lines.append(f"- Detection ({m['detection']['rule']}): precision {_fmt(d['precision'])}, recall "
                     f"{_fmt(d['recall'])} ({d['true_positives']} of {d['positives']} transition clips among "
                     f"{d['n']} held-out clips; {d['flagged']} flagged; base rate "
                     f"{_fmt(d['positives'] / max(d['n'], 1))}).")
        loc = m["localisation"]
        lines.append(f"- Localisation on {loc['n_clips']} long clips ({loc['n_frames']} frames, windows of "
                     f"{loc['window']}): the path changed mode in {_fmt(loc['located'])} of them; |error| mean "
                     f"{_fmt(loc['mean_abs_error'], 2)}, median {_fmt(loc['median_abs_error'], 2)} frames; "
                     f"within ±{loc['tolerance']} frames: {_fmt(loc['within_tol'])}.")
        c = m["critical"]
        lines.append(f"- Critical-state generation: {c['n_points']} source points on the singular set (predict flags "
                     f"{_fmt(c['flagged_fraction'], 4)} of the source; {_fmt(c['kept_fraction'], 4)} are flagged "
                     "with two modes among their top-k cells), two boundary targets each: "
                     f"{_fmt(c['sides_transition_rate'])} of the decoded clips are transitions "
                     f"({_fmt(c['enrichment'], 1)} x the data's rate {_fmt(c['data_rate'])}); "
                     f"{_fmt(c['sides_are_training_transitions'])} of the boundary targets are codes of training "
                     f"transition clips; {_fmt(c['pairs_touching_minor_mode'])} of the source points touch a minor mode "
                     "(the others sit where the two steady modes' cells meet directly, and both their sides are "
                     "steady clips). The midpoints of the two sides decode to transitions at "
                     f"{_fmt(c['mid_transition_rate'])} and to blends at {_fmt(c['mid_blend_rate'])}: interpolating "
                     "across the singular set gives the ball in both wells at once, the failure the seeds "
                     "attribute to diffusion.")
    df = m["diffusion"]
    for nm in ("DiT", "MLP"):
        lp = df[nm]["loss"]
        lines.append(f"- {nm} diffusion: {df[nm]['n_steps']} training steps ({_fmt(df[nm]['fit_seconds'], 0)} s), "
                     f"loss last 10 % {lp['last_10pct']:.4f}, previous 10 % {lp['previous_10pct']:.4f} (relative "
                     f"change {lp['relative_change']:+.2%}).")
    sp = {k: rows[k]["samples_per_s"] for k in GENERATORS}
    lines.append("- Speed (latent sampling of one batch of " + str(m["settings"]["n_samples"]) + ", decoding excluded): "
                 + ", ".join(f"{k} {v:.0f}/s" for k, v in sp.items()) + ".")
    lines.append(f"- AE: held-out reconstruction MSE {m['ae']['test_mse']:.5f}; fit {_fmt(m['ae']['fit_seconds'], 0)} s. "
                 f"OT: {m['ot']['n_iter']} iterations, converged {m['ot']['converged']}, TV "
                 f"{_fmt(m['ot']['tv_error'], 4)}, {_fmt(m['ot']['fit_seconds'], 0)} s. Total "
                 f"{m['timings']['total']:.0f} s.")
    return lines


# ----------------------------------------------------------------------------- main entry

def compare_video(dataset: str = "bistable", out="otgen-out/compare-video", *, n_train: int = 2000,
                  n_test: int = 1000, ae_epochs: int | None = None, diffusion_steps: int = 10000, dit_steps: int | None = 4000,
                  n_samples: int = 500, ddpm_steps: int = 1000, ddim_steps: int = 50, ot_tol: float = 0.03,
                  ot_max_iter: int = 100, ae_extra: int | None = None, angle_threshold="persistence",
                  angle_quantile=None, mode_rule: str = "component", min_size: float = 0.05, n_long: int = 100,
                  long_frames: int = 64, n_critical: int = 250, detect_rule: str = "minor-mode", ae_kwargs=None,
                  dit_kwargs=None,
                  device=None, seed: int = 0, cache_dir=None, verbose: bool = True) -> dict:
    """Compare semi-discrete OT with a diffusion transformer (and an MLP DDPM) on video clip latents.

    See the module docstring for the pipeline and every measurement.

    Parameters
    ----------
    dataset : {"bistable", "moving-digits", "permanence"}
    out : str or os.PathLike
        Receives ``report.md``, ``metrics.json`` and the figures (PNG + JSON).
    n_train, n_test : int, default 2000, 1000
        Training clips (autoencoder and every generator) and held-out clips (floors, detection).
    ae_epochs : int or None
        Autoencoder epochs (``None``: :data:`AE_EPOCHS` of ``dataset``; settings :func:`ae_settings`,
        overridable by ``ae_kwargs``).
    diffusion_steps : int, default 10000
        Training steps of the MLP latent DDPM.
    dit_steps : int or None, default 4000
        Training steps of the diffusion transformer (``None``: ``diffusion_steps``). A DiT step costs
        about 7 MLP steps on a CPU; both losses flatten by their defaults (see the report).
    n_samples : int, default 500
        Latent samples per generator (and clips per floor).
    ddpm_steps, ddim_steps : int, default 1000, 50
    ot_tol : float, default 0.03
    ot_max_iter : int, default 100
    ae_extra : int or None
        Extra transition clips the *autoencoder* trains on (bistable only; ``None``: ``n_train // 4``
        for bistable, 0 otherwise). The generators always train on the codes of the ``n_train`` clips, at the data's
        transition rate. Why: at a 5 % rate the autoencoder sees too few transitions and reconstructs
        most held-out ones as teleports or blends (the report shows this floor), which would hide what
        the generators do at the boundary; with the extra clips it reconstructs them.
    angle_threshold : "persistence", None, "gap", "ratio" or float
        Threshold rule of the singular-set detector (:func:`fit_detector`; the detector's own gap
        rule finds no gap in the angles of a 16-d latent, see :func:`otgen.singular.persistence_threshold`).
    angle_quantile : float in (0, 1) or None, default None
        When given, the detector's threshold is this quantile of the neighbour angles (replaces
        ``angle_threshold``), as in :func:`otgen.compare.compare_mnist`.
    mode_rule : {"component", "facet"}, default "component"
        The extended OT map blends the top cells of a point when they lie in one mode, or (``"facet"``,
        the AE-OT local rule) when no singular facet separates them.
    min_size : float, default 0.05
        Least mass of a major mode (persistence threshold, ``"minor-mode"`` detection).
    n_long, long_frames : int, default 100, 64
        Long bistable clips (one transition each) for the localisation (bistable only).
    n_critical : int, default 250
        Flagged source points for the critical-state generation (two clips each; bistable only).
    detect_rule : {"minor-mode", "fraction", "incident"}
        Boundary-cell rule of the detection (:func:`otgen.singular.boundary_cells`); all three are
        reported, this one is the primary.
    ae_kwargs, dit_kwargs : dict, optional
    device : str or torch.device or None
    seed : int, default 0
    cache_dir : path or None
        Artifact cache; ``None``: ``<out>/cache``.
    verbose : bool, default True

    Returns
    -------
    dict
        The contents of ``metrics.json`` plus ``paths``.

    Notes
    -----
    Run time with the defaults, one torch thread on this project's 2-core CPU (the other core busy):
    bistable 573 s uncached (autoencoder 155 s, OT 38 s, DiT 250 s, MLP 71 s). Use one thread
    (``torch.set_num_threads(1)``) when the machine is shared: with two threads and a busy core the
    small autoencoder steps ran 20 times slower.

    Convergence of the baselines (bistable, defaults): the DiT loss (mean of the last 10 % of steps)
    is 0.3076 after 4,000 steps and 0.2999 after 8,000; the MLP's 0.3003 after 10,000 steps and
    0.2898 after 20,000. With the doubled training the DiT DDPM samples had 0.054 transitions (0.048
    at 4,000 steps), no teleports or blends either way, sliced Wasserstein 0.090 (0.088); DiT DDIM
    0.040 transitions (0.030) and SW 0.099 (0.119); MLP DDPM 0.054 (0.054), SW 0.089 (0.090). The
    defaults are kept for the 15-minute budget; the conclusions do not change.
    """
    from otgen.data.video import bistable_long
    from otgen.figures._common import _check_out_dir, _jsonable
    from otgen.figures.video_critical_states import comparison_figures
    from otgen.metrics import sliced_wasserstein
    from otgen.singular import boundary_cells, flag_codes

    check_choice(dataset, "dataset", DATASETS)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path (str or os.PathLike), got {type(out).__name__}")
    n_train = check_positive_int(n_train, "n_train", minimum=20)
    n_test = check_positive_int(n_test, "n_test", minimum=10)
    ae_epochs = AE_EPOCHS[dataset] if ae_epochs is None else check_positive_int(ae_epochs, "ae_epochs")
    ae_extra = ((n_train // 4) if dataset == "bistable" else 0) if ae_extra is None else \
        check_positive_int(ae_extra, "ae_extra", minimum=0)
    if ae_extra and dataset != "bistable":
        raise ValueError(f"ae_extra (extra transition clips for the autoencoder) is a bistable setting, got "
                         f"ae_extra={ae_extra} for dataset {dataset!r}")
    diffusion_steps = check_positive_int(diffusion_steps, "diffusion_steps")
    dit_steps = diffusion_steps if dit_steps is None else check_positive_int(dit_steps, "dit_steps")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    ddpm_steps = check_positive_int(ddpm_steps, "ddpm_steps")
    ddim_steps = check_positive_int(ddim_steps, "ddim_steps")
    ot_tol = check_positive_float(ot_tol, "ot_tol")
    ot_max_iter = check_positive_int(ot_max_iter, "ot_max_iter")
    n_long = check_positive_int(n_long, "n_long")
    long_frames = check_positive_int(long_frames, "long_frames", minimum=17)
    n_critical = check_positive_int(n_critical, "n_critical")
    check_choice(detect_rule, "detect_rule", _DETECT_RULES)
    for kw, nm in ((ae_kwargs, "ae_kwargs"), (dit_kwargs, "dit_kwargs")):
        if kw is not None and not isinstance(kw, dict):
            raise TypeError(f"{nm} must be a dict or None, got {type(kw).__name__}")
    seed = _check_seed(seed)
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False, got {verbose!r}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    angle_quantile, mode_rule = _check_threshold_rule(angle_threshold, angle_quantile, mode_rule)
    from otgen.singular.paths import _check_min_size
    min_size = _check_min_size(min_size)
    out_dir = _check_out_dir(out)                          # created once every argument is known to be good
    if cache_dir is None:
        cache_dir = os.path.join(out_dir, "cache")
    dev = resolve_device(device)
    say = print if verbose else (lambda *a, **kw: None)
    t_start = time.perf_counter()

    x_tr, lab_tr, y_tr = video_data(dataset, n_train, seed, "train")
    x_te, lab_te, y_te = video_data(dataset, n_test, seed + 1, "test")
    say(f"[compare_video] {dataset}: {n_train} train / {n_test} held-out clips {tuple(x_tr.shape[1:])}; "
        "fitting or loading artifacts")
    art = fit_video_artifacts(dataset, x_tr, ae_epochs=ae_epochs, dit_steps=dit_steps, mlp_steps=diffusion_steps,
                              ot_tol=ot_tol, ot_max_iter=ot_max_iter, ae_kwargs=ae_kwargs, dit_kwargs=dit_kwargs,
                              device=dev, seed=seed, cache_dir=cache_dir, verbose=verbose, ae_extra=ae_extra)
    ae, ot, dit, mlp = art["ae"], art["ot"], art["dit"], art["mlp"]
    mean, scale, z_tr = art["mean"], art["scale"], art["z"]
    t_art = time.perf_counter() - t_start
    det = fit_detector(ot, angle_threshold, min_size=min_size, seed=seed, angle_quantile=angle_quantile,
                       mode_rule=mode_rule)
    z_te = standardize_codes(np.asarray(ae.encode(x_te), np.float32), mean, scale)[0]
    copy_radius = 0.01 * _nn_median(z_tr)
    Y = ot.targets_.detach().cpu().numpy()

    def decode(z_std):
        y = np.asarray(z_std, np.float32) * scale + mean
        return np.clip(np.asarray(ae.decode(y.astype(np.float32))), 0.0, 1.0)

    gens = {"OT (extended)": OTGenerator(ot, det, extension="piecewise-linear", seed=seed),
            "OT (plain)": OTGenerator(ot, det, extension="none", seed=seed),
            "DiT DDPM": DiffusionGenerator(dit, "ddpm", ddpm_steps, seed=seed),
            "DiT DDIM": DiffusionGenerator(dit, "ddim", ddim_steps, seed=seed),
            "MLP DDPM": DiffusionGenerator(mlp, "ddpm", ddpm_steps, seed=seed)}
    rows, clips, zs, extra = {}, {}, {}, {}
    for name, gen in gens.items():
        say(f"[compare_video] sampling {n_samples} from {name}")
        pts, info, secs = _timed_sample(gen, n_samples, seed)
        z = pts.detach().cpu().numpy().astype(np.float32)
        if name.startswith(("DiT", "MLP")):           # diffusion samples raw codes
            z = standardize_codes(z, mean, scale)[0]
        x = decode(z)
        r = plausibility(dataset, x)
        r.update(sw_latent=sliced_wasserstein(z, z_te, seed=seed), copy_rate=_copy_rate(z, z_tr, copy_radius),
                 samples_per_s=n_samples / secs, sample_seconds=secs)
        if "near_singular" in info:
            r["near_singular_fraction"] = float(info["near_singular"].float().mean())
        rows[name], clips[name], zs[name] = r, x, z
    idx = np.random.default_rng(seed).choice(n_test, size=min(n_samples, n_test), replace=False)
    x_real = np.asarray(x_te[idx])
    x_rec = np.clip(np.asarray(ae.reconstruct(x_te[idx])), 0.0, 1.0)
    for name, x, z in (("real clips (held-out)", x_real, z_te[idx]), ("AE reconstructions", x_rec, z_te[idx])):
        r = plausibility(dataset, x)
        r.update(sw_latent=sliced_wasserstein(z, z_te, seed=seed), copy_rate=_copy_rate(z, z_tr, copy_radius),
                 samples_per_s=None, sample_seconds=None)
        rows[name], clips[name], zs[name] = r, x, z

    data = {"train_label_counts": np.bincount(y_tr).tolist()}
    metrics = {"dataset": dataset, "rows": rows, "data": data}
    paths_info = None
    if dataset == "bistable":
        data["train_transition_rate"] = float((lab_tr["state"] == 2).mean())
        data["test_transition_rate"] = float((lab_te["state"] == 2).mean())
        tr_te = lab_te["state"] == 2
        rec_all = plausibility(dataset, np.clip(np.asarray(ae.reconstruct(x_te)), 0.0, 1.0))
        data["reconstructed_transitions"] = float((rec_all["classes"][tr_te] == "transition").mean()) \
            if tr_te.any() else None
        data["reconstructed_transition_classes"] = dict(zip(*[a.tolist() for a in np.unique(
            rec_all["classes"][tr_te], return_counts=True)])) if tr_te.any() else {}
        # detection: held-out real clips, flagged when the nearest target is a boundary cell
        say("[compare_video] detection, localisation, critical states")
        truth = lab_te["state"] == 2
        w_ot = ot.weights_.detach().cpu().numpy()
        kw = {"minor-mode": dict(min_size=min_size, weights=w_ot), "fraction": {}, "incident": {}}
        det_rows = {rule: detection_scores(flag_codes(z_te, ot, det, rule=rule, **kw[rule]), truth)
                    for rule in _DETECT_RULES}
        metrics["detection"] = {"rule": detect_rule, "primary": det_rows[detect_rule], "rules": det_rows,
                                "boundary_cells": {rule: int(boundary_cells(det, rule, **kw[rule]).sum())
                                                   for rule in _DETECT_RULES},
                                "flags": flag_codes(z_te, ot, det, rule=detect_rule, **kw[detect_rule])}
        # localisation along sliding-window paths of long clips
        x_long, lab_long = bistable_long(n_long, n_frames=long_frames, seed=seed + 2)
        loc = localise_transitions(ae, x_long, lab_long["transition_frame"], ot, det, mean, scale,
                                   window=int(x_tr.shape[1]))
        metrics["localisation"] = {k: v for k, v in loc.items() if k not in ("paths", "starts", "modes")}
        paths_info = loc
        # critical-state generation on the singular set
        cs = critical_states(ot, det, n_critical, seed=seed)
        m_pts = len(cs["i"])
        crit = {"n_points": int(m_pts), "drawn": cs["drawn"], "flagged_fraction": cs["flagged_fraction"],
                "kept_fraction": cs["kept_fraction"],
                "seconds": cs["seconds"], "data_rate": data["train_transition_rate"]}
        if m_pts:
            z_sides = np.concatenate([Y[cs["i"]], Y[cs["j"]]])
            z_mid = 0.5 * (Y[cs["i"]] + Y[cs["j"]])
            for name, z in ((CRITICAL[0], z_sides), (CRITICAL[1], z_mid)):
                x = decode(z)
                r = plausibility(dataset, x)
                r.update(sw_latent=sliced_wasserstein(z, z_te, seed=seed), copy_rate=_copy_rate(z, z_tr, copy_radius),
                         samples_per_s=len(z) / cs["seconds"], sample_seconds=cs["seconds"])
                rows[name], clips[name], zs[name] = r, x, z
            # which training clips are the boundary targets? (targets are the unique train codes)
            state_of_target = np.full(len(Y), -1)
            state_of_target[art["unique_index"]] = lab_tr["state"]
            side_states = state_of_target[np.concatenate([cs["i"], cs["j"]])]
            minor = boundary_cells(det, "minor-mode", min_size=min_size, weights=ot.weights_.detach().cpu().numpy())
            crit["pairs_touching_minor_mode"] = float((minor[cs["i"]] | minor[cs["j"]]).mean())
            crit.update(sides_transition_rate=rows[CRITICAL[0]]["transition_rate"],
                        mid_transition_rate=rows[CRITICAL[1]]["transition_rate"],
                        mid_blend_rate=rows[CRITICAL[1]]["blend_rate"],
                        sides_are_training_transitions=float((side_states == 2).mean()),
                        enrichment=rows[CRITICAL[0]]["transition_rate"] / max(data["train_transition_rate"], 1e-12))
        else:
            crit.update(sides_transition_rate=float("nan"), mid_transition_rate=float("nan"), pairs_touching_minor_mode=float("nan"),
                        mid_blend_rate=float("nan"), sides_are_training_transitions=float("nan"),
                        enrichment=float("nan"))
        metrics["critical"] = crit
        extra["critical"] = cs

    hist = ot.history_
    comp_sizes = np.sort(np.bincount(det.cell_component_))[::-1]
    metrics.update({
        "settings": dict(dataset=dataset, n_train=n_train, n_test=n_test, ae_epochs=ae_epochs,
                         diffusion_steps=diffusion_steps, dit_steps=dit_steps, n_samples=n_samples, ae_extra=ae_extra,
                         ddpm_steps=ddpm_steps, ddim_steps=ddim_steps, ot_tol=ot_tol, ot_max_iter=ot_max_iter,
                         angle_threshold=angle_threshold, angle_quantile=angle_quantile, mode_rule=mode_rule,
                         min_size=min_size, n_long=n_long, long_frames=long_frames,
                         n_critical=n_critical, detect_rule=detect_rule, ae=ae_settings(dataset, ae_kwargs),
                         dit=dict(DIT_DEFAULTS, **(dit_kwargs or {})), device=str(dev), seed=seed,
                         torch_threads=torch.get_num_threads(), clip_shape=list(x_tr.shape[1:])),
        "ae": dict(test_mse=ae.reconstruction_error(x_te), fit_seconds=art["fit_seconds"]["autoencoder"],
                   latent_dim=int(z_tr.shape[1]), final_epoch_loss=float(ae.history_["loss"][-1])),
        "ot": dict(fit_seconds=art["fit_seconds"]["ot"], n_iter=int(ot.n_iter_), converged=bool(ot.converged_),
                   tv_error=float(hist[-1]["tv"]) if hist else None, n_targets=int(len(Y))),
        "detector": dict(n_components=int(det.n_components_), threshold=float(det.threshold_),
                         angle_threshold=(f"quantile {angle_quantile}" if angle_quantile is not None
                                          else str(angle_threshold or "gap")), mode_rule=mode_rule,
                         n_pairs=int(len(det.pairs_)),
                         mode_mass=np.sort(np.bincount(det.cell_component_, weights=ot.weights_.detach().cpu().numpy()))[::-1][:4].tolist(),
                         n_singular_pairs=int(len(det.singular_pairs_)), largest_modes=comp_sizes[:4].tolist()),
        "diffusion": {"DiT": dict(n_steps=dit_steps, fit_seconds=art["fit_seconds"]["dit"],
                                  loss=_loss_plateau(dit.history_["loss"])),
                      "MLP": dict(n_steps=diffusion_steps, fit_seconds=art["fit_seconds"]["mlp"],
                                  loss=_loss_plateau(mlp.history_["loss"]))},
        "timings": dict(fit_seconds=art["fit_seconds"], artifacts=t_art),
        "cache_hits": art["hits"],
        "all_cached": all(art["hits"].values()),
    })
    say("[compare_video] writing figures")
    fig_paths = comparison_figures(out_dir, dataset, clips, rows, z_tr=z_tr, labels=y_tr, ot=ot, detector=det,
                                   z_test=z_te, flags=metrics.get("detection", {}).get("flags"),
                                   paths=paths_info, losses={"DiT": dit.history_["loss"], "MLP": mlp.history_["loss"]},
                                   critical=extra.get("critical"), seed=seed)
    if "detection" in metrics:
        metrics["detection"].pop("flags")
    for r in rows.values():
        for k in [k for k, v in r.items() if isinstance(v, np.ndarray)]:
            r.pop(k)
    metrics["timings"]["total"] = time.perf_counter() - t_start
    js = os.path.join(out_dir, "metrics.json")
    with open(js, "w") as f:
        json.dump(_jsonable(metrics), f, indent=2)
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as f:
        f.write(_report(metrics))
    say(f"[compare_video] wrote {md} ({metrics['timings']['total']:.0f} s)")
    metrics["paths"] = dict(report=md, metrics=js, **fig_paths)
    return metrics


def _report(m: dict) -> str:
    ds, s = m["dataset"], m["settings"]
    lines = [f"# Video ({ds}): semi-discrete OT vs a diffusion transformer on clip latents\n",
             f"{s['n_train']} training clips {tuple(s['clip_shape'])}, autoencoder latent "
             f"{s['ae']['latent_tokens']} tokens x {s['ae']['token_dim']} = {m['ae']['latent_dim']} numbers; "
             f"{s['n_samples']} samples per generator, decoded by the same autoencoder and read by pixel "
             f"instruments; floors on {min(s['n_samples'], s['n_test'])} held-out real clips. DiT = diffusion "
             f"transformer over the latent tokens ({s['dit_steps']} steps), MLP = residual-MLP DDPM "
             f"({s['diffusion_steps']} steps); DDPM {s['ddpm_steps']} / DDIM {s['ddim_steps']} sampling steps. "
             "SW latent = sliced Wasserstein distance to the held-out codes (standardised); copies = fraction of "
             "samples on a training code; samples/s = latent sampling of one batch (decoding excluded).\n",
             "## Physical plausibility (pixel instruments)\n", _table(ds, m["rows"]) + "\n"]
    if ds == "bistable":
        d = m["detection"]
        lines += ["## Detection of transition clips among held-out real clips\n",
                  "| rule | boundary cells | flagged | precision | recall | F1 | positives / clips |",
                  "|---|---|---|---|---|---|---|"]
        for rule, r in d["rules"].items():
            lines.append(f"| {rule}{' (primary)' if rule == d['rule'] else ''} | {d['boundary_cells'][rule]} | "
                         f"{r['flagged']} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | "
                         f"{r['positives']} / {r['n']} |")
        loc = m["localisation"]
        lines += ["", "## Localisation of the transition in long clips\n",
                  "| clips | frames | window | located | mean abs error | median abs error | within ±"
                  f"{loc['tolerance']} |", "|---|---|---|---|---|---|---|",
                  f"| {loc['n_clips']} | {loc['n_frames']} | {loc['window']} | {_fmt(loc['located'])} | "
                  f"{_fmt(loc['mean_abs_error'], 2)} | {_fmt(loc['median_abs_error'], 2)} | {_fmt(loc['within_tol'])} |",
                  "", "## Critical-state generation from the singular set\n",
                  "| source points kept | flagged / kept fraction of source | transitions (both sides) | data rate | enrichment | "
                  "boundary targets that are training transitions | transitions (midpoint) | blends (midpoint) |",
                  "|---|---|---|---|---|---|---|---|"]
        c = m["critical"]
        lines.append(f"| {c['n_points']} | {_fmt(c['flagged_fraction'], 4)} / {_fmt(c['kept_fraction'], 4)} | "
                     f"{_fmt(c['sides_transition_rate'])} | "
                     f"{_fmt(c['data_rate'])} | {_fmt(c['enrichment'], 2)} | {_fmt(c['sides_are_training_transitions'])}"
                     f" | {_fmt(c['mid_transition_rate'])} | {_fmt(c['mid_blend_rate'])} |")
        lines.append("")
    lines += ["## Discussion\n"] + _discussion(m)
    return "\n".join(lines) + "\n"
