"""Video: semi-discrete OT against a Sora-style diffusion transformer on clip latents (critical states).

A :class:`~otgen.autoencoder.VideoAutoencoder` encodes clips with known physics
(:mod:`otgen.data.video`) to one latent code per clip; one :class:`~otgen.latent.LatentSpace`
standardises the codes for every generator:

* semi-discrete OT from the uniform cube with its :class:`~otgen.singular.SingularSetDetector`,
  sampled plain (:math:`\\nabla u_h`) or extended inside a mode, never across the singular set [1]_;
* the Sora-style baseline: a diffusion transformer over the code's latent tokens
  (``LatentDiffusion(denoiser="dit")``, adaLN-Zero [3]_ [4]_), sampled with DDPM [2]_ and DDIM [5]_;
* an MLP latent DDPM on the flat codes.

Samples are decoded by the same autoencoder and read by pixel instruments
(:mod:`otgen.metrics.video`): bistable clip classes (teleport, blend, ...), the object count
of permanence clips ("three puppies become four"), mass and jumps of moving digits. The floors
are the same instruments on held-out real clips and on their reconstructions :math:`D(E(x))`.
On ``bistable`` three more stages read the singular set: :func:`detection` of transition clips,
:func:`localisation` of the transition along sliding-window latent paths, and
:func:`critical` generation from source points on the singular set [6]_.

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

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from otgen._base import spawn_seed
from otgen._validation import resolve_device
from otgen.autoencoder import VideoAutoencoder
from otgen.data.video import bistable, bistable_long, moving_digits, permanence
from otgen.diffusion import LatentDiffusion
from otgen.experiments._cache import Cache
from otgen.experiments._common import (binomial_se, check_out_dir, check_settings_fields, difference_se, fmt,
                                       latent_scores, timed_sample, write_json, write_text)
from otgen.generate import DiffusionGenerator, OTGenerator
from otgen.latent import LatentSpace
from otgen.metrics import (bistable_clip_classes, count_consistency, detection_scores, loss_plateau,
                           moving_digit_plausibility, nn_median)
from otgen.singular import SingularSetDetector, boundary_cells, critical_states, flag_codes, localise_transitions
from otgen.transport import SemiDiscreteOT

__all__ = ["VideoSettings", "VideoArtifacts", "VideoRun", "DATASETS", "GENERATORS", "FLOORS", "video_data",
           "plausibility", "fit", "make_generators", "sample", "score", "detection", "localisation", "critical",
           "report", "run", "critical_sets"]

DATASETS = ("bistable", "moving-digits", "permanence")
GENERATORS = ("OT (extended)", "OT (plain)", "DiT DDPM", "DiT DDIM", "MLP DDPM")
FLOORS = ("real clips (held-out)", "AE reconstructions")
CRITICAL = ("OT singular (both sides)", "OT singular (midpoint)")
DETECT_RULES = ("minor-mode", "fraction", "incident")
COPY_RADIUS = 0.01            # a sample within this fraction of the median NN distance of a training code copies it
#: Autoencoder settings shared by the datasets (measured on bistable: held-out MSE 0.0021).
AE_DEFAULTS = dict(latent_tokens=4, token_dim=4, tubelet=(4, 8, 8), width=64, depth=2, heads=4, mlp_ratio=2,
                   batch_size=16, lr=2e-3, loss="bce")
#: Per dataset, on top of AE_DEFAULTS (seed 0, 2,000 clips, 200 held-out reconstructions). Permanence: the
#: shared 16-d code gives MSE 0.067 and 0.99 count changes; a 32-d code, the data's four symmetries as
#: augmentation and 48 epochs give 0.035 and 0.78. Moving digits: the conv read-out and time reversal give
#: MSE 0.0086 and 0.125 implausible (shared defaults: 0.0104 and 0.356).
AE_DATASET = {"bistable": {}, "moving-digits": dict(readout="conv", symmetries=("time",)),
              "permanence": dict(latent_tokens=8, symmetries=("time", "hflip", "vflip", "transpose"))}
AE_EPOCHS = {"bistable": 24, "moving-digits": 24, "permanence": 48}
#: Diffusion transformer (token width, blocks, heads, MLP ratio, time embedding); its loss is flat at 4,000 steps.
DIT_DEFAULTS = dict(hidden=128, depth=3, heads=4, mlp_ratio=2, time_embed_dim=64)
HEADLINE = {"bistable": "implausible_rate", "permanence": "changed_rate", "moving-digits": "implausible_rate"}


def _check_min_size(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 0.5:
        raise ValueError(f"{name} must be a number in (0, 0.5], got {value!r}")


def _check_angle_threshold(value, name):
    if isinstance(value, str) and value in ("persistence", "gap", "ratio"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= np.pi:
        raise ValueError(f"{name} must be 'persistence', 'gap', 'ratio' or radians in (0, pi], got {value!r}")


@dataclass(frozen=True)
class VideoSettings:
    """Every setting of the video comparison, with its default and why (where it was measured)."""

    dataset: str = field(default="bistable", metadata=dict(check=DATASETS, help="the clips"))
    n_train: int = field(default=2000, metadata=dict(check="int", minimum=20, help="training clips"))
    n_test: int = field(default=1000, metadata=dict(check="int", minimum=10, help="held-out clips (floors, detection)"))
    ae_epochs: int | None = field(default=None, metadata=dict(
        check="int", optional=True, help="autoencoder epochs (default: bistable 24, moving-digits 24, permanence 48)"))
    ae_extra: int | None = field(default=None, metadata=dict(
        check="int0", optional=True, help="bistable: extra transition clips for the autoencoder only (default "
        "n_train / 4: at the data's 5%% rate it reconstructs most held-out transitions as teleports)"))
    diffusion_steps: int = field(default=10000, metadata=dict(check="int", help="training steps of the MLP DDPM"))
    dit_steps: int = field(default=4000, metadata=dict(
        check="int", help="training steps of the diffusion transformer (loss 0.3076 at 4,000, 0.2999 at 8,000)"))
    n_samples: int = field(default=500, metadata=dict(check="int", minimum=2, help="samples per generator and floor"))
    ddpm_steps: int = field(default=1000, metadata=dict(check="int", help="DDPM sampling steps"))
    ddim_steps: int = field(default=50, metadata=dict(check="int", help="DDIM sampling steps"))
    ot_tol: float = field(default=0.03, metadata=dict(check="float", help="total-variation tolerance of the OT solve"))
    ot_max_iter: int = field(default=100, metadata=dict(check="int", help="Newton iterations of the OT solve"))
    angle_threshold: object = field(default="persistence", metadata=dict(
        check=_check_angle_threshold, help="detector threshold rule: persistence, gap, ratio or radians "
        "(the gap rule finds no gap in a 16-d clip latent)"))
    angle_quantile: float | None = field(default=None, metadata=dict(
        check="fraction", optional=True, help="detector threshold at this quantile of the angles (replaces "
        "--angle-threshold)"))
    blend_rule: str = field(default="component", metadata=dict(
        check=("component", "facet"), help="the extended OT map blends cells of one mode or of no singular facet"))
    min_size: float = field(default=0.05, metadata=dict(
        check=_check_min_size, help="least mass of a major mode (persistence threshold, minor-mode detection)"))
    n_long: int = field(default=100, metadata=dict(check="int", help="bistable: long clips for the localisation"))
    long_frames: int = field(default=64, metadata=dict(check="int", minimum=17, help="bistable: frames of a long clip"))
    n_critical: int = field(default=250, metadata=dict(
        check="int", help="bistable: source points on the singular set for critical-state generation"))
    detect_rule: str = field(default="minor-mode", metadata=dict(
        check=DETECT_RULES, help="bistable: the primary boundary-cell rule of the detection (all are reported)"))
    seed: int = field(default=0, metadata=dict(check="seed", help="the one seed every random stream is spawned from"))

    def __post_init__(self):
        check_settings_fields(self)
        if self.angle_quantile is not None and self.angle_threshold != "persistence":
            raise ValueError(f"give angle_threshold (got {self.angle_threshold!r}) or angle_quantile "
                             f"(got {self.angle_quantile!r}), not both")
        if self.ae_extra and self.dataset != "bistable":
            raise ValueError(f"ae_extra (extra transition clips for the autoencoder) is a bistable setting, got "
                             f"ae_extra={self.ae_extra} for dataset {self.dataset!r}")

    def epochs(self) -> int:
        return AE_EPOCHS[self.dataset] if self.ae_epochs is None else self.ae_epochs

    def extra(self) -> int:
        return (self.n_train // 4 if self.dataset == "bistable" else 0) if self.ae_extra is None else self.ae_extra

    def ae_config(self) -> dict:
        return dict(AE_DEFAULTS, **AE_DATASET[self.dataset], epochs=self.epochs())

    def ae_key(self) -> dict:
        return dict(dataset=self.dataset, n_train=self.n_train, seed=self.seed, ae=self.ae_config(), extra=self.extra())

    def detector(self) -> SingularSetDetector:
        rule = dict(angle_threshold="quantile", quantile=self.angle_quantile) if self.angle_quantile is not None \
            else dict(angle_threshold=self.angle_threshold)
        return SingularSetDetector(seed=spawn_seed(self.seed, "detector"), min_size=self.min_size, **rule)


@dataclass
class VideoArtifacts:
    """The fitted models and data of :func:`fit` (train / test: clips, label dict, one label per clip)."""

    train: tuple
    test: tuple
    ae: VideoAutoencoder
    latent: LatentSpace
    ot: SemiDiscreteOT
    dit: LatentDiffusion
    mlp: LatentDiffusion
    codes: np.ndarray
    z: np.ndarray
    cache: Cache


@dataclass
class VideoRun:
    """Everything :func:`run` produced: what the figures draw from."""

    settings: VideoSettings
    artifacts: VideoArtifacts
    detector: SingularSetDetector
    samples: dict
    metrics: dict
    extras: dict
    paths: dict


def video_data(dataset: str, n: int, seed: int = 0, split: str = "train"):
    """Clips (n, 16, 1, 32, 32), their label dict, and one int label per clip (state, count or digit)."""
    if dataset == "bistable":
        clips, labels = bistable(n, seed=seed)
        return clips, labels, np.asarray(labels["state"], np.int64)
    if dataset == "permanence":
        clips, labels = permanence(n, seed=seed)
        return clips, labels, np.asarray(labels["n_objects"], np.int64)
    clips, labels = moving_digits(n, seed=seed, split=split)
    return clips, labels, np.asarray(labels["digit"][:, 0], np.int64)


def plausibility(dataset: str, clips) -> dict:
    """The pixel instruments of ``dataset`` on clips (n, T, C, H, W): rates and per-clip arrays.

    bistable: clip-class rates, ``implausible_rate`` = teleport + blend + empty + barrier, ``classes``;
    permanence: ``changed_rate``, modal counts ``count_3`` / ``count_4`` / ``count_other``,
    ``implausible_rate`` (changed or other count), ``changed``, ``counts``; moving digits:
    :func:`~otgen.metrics.moving_digit_plausibility`.
    """
    x = np.clip(np.asarray(clips, dtype=np.float32), 0.0, 1.0)
    if dataset == "bistable":
        r = bistable_clip_classes(x)
        out = {k: float(v) for k, v in r.items() if k.endswith("_rate")}
        out["implausible_rate"] = out["teleport_rate"] + out["blend_rate"] + out["empty_rate"] + out["barrier_rate"]
        return dict(out, classes=r["classes"])
    if dataset == "permanence":
        c = count_consistency(x)
        modal = c["per_clip_counts"]
        other = ~np.isin(modal, (3, 4))
        return {"changed_rate": c["changed_rate"], "count_3": float((modal == 3).mean()),
                "count_4": float((modal == 4).mean()), "count_other": float(other.mean()),
                "implausible_rate": float((c["changed"] | other).mean()), "changed": c["changed"], "counts": modal}
    return moving_digit_plausibility(x)


# ----------------------------------------------------------------------------- stages

def fit(settings: VideoSettings, cache: Cache | None = None, *, device=None, verbose: bool = False) -> VideoArtifacts:
    """Train or load the video autoencoder, the OT map and the two latent diffusion models."""
    s, cache, dev = settings, cache or Cache(None), resolve_device(device)
    train = video_data(s.dataset, s.n_train, s.seed, "train")
    test = video_data(s.dataset, s.n_test, spawn_seed(s.seed, "test clips"), "test")
    cfg = s.ae_config()

    def fit_ae():
        x = train[0]
        if s.extra():     # transitions at the data's 5 % rate are too few for the autoencoder to learn them
            x = torch.cat([x, bistable(s.extra(), transition_rate=1.0, seed=spawn_seed(s.seed, "ae extra"))[0]])
        return VideoAutoencoder(**cfg, device=dev, seed=s.seed, verbose=verbose).fit(x)

    ae = cache.get_or_fit("video-autoencoder", s.ae_key(), fit_ae, VideoAutoencoder, dev)
    codes = np.asarray(ae.encode(train[0]), np.float32)                        # (n, d)
    latent = LatentSpace().fit(codes)
    ot = cache.get_or_fit("video-ot", dict(s.ae_key(), tol=s.ot_tol, max_iter=s.ot_max_iter), lambda: OTGenerator(
        latent=latent, ot=SemiDiscreteOT(tol=s.ot_tol, max_iter=s.ot_max_iter, device=dev, seed=s.seed,
                                         verbose=verbose)).fit(codes).ot_, SemiDiscreteOT, dev)
    n_tokens = int(cfg["latent_tokens"])
    dit = cache.get_or_fit("video-dit", dict(s.ae_key(), n_steps=s.dit_steps, dit=DIT_DEFAULTS), lambda: LatentDiffusion(
        denoiser="dit", n_tokens=n_tokens, n_steps=s.dit_steps, latent=latent, device=dev, seed=s.seed,
        verbose=verbose, **DIT_DEFAULTS).fit(codes), LatentDiffusion, dev)
    mlp = cache.get_or_fit("video-mlp", dict(s.ae_key(), n_steps=s.diffusion_steps), lambda: LatentDiffusion(
        denoiser="mlp", n_steps=s.diffusion_steps, latent=latent, device=dev, seed=s.seed, verbose=verbose
    ).fit(codes), LatentDiffusion, dev)
    return VideoArtifacts(train, test, ae, latent, ot, dit, mlp, codes, latent.transform(codes), cache)


def make_generators(settings: VideoSettings, art: VideoArtifacts):
    """The detector (one fit) and the five generators, fitted on the training codes."""
    s = settings
    det = s.detector().fit(art.ot)
    ot = dict(latent=art.latent, ot=art.ot, detector=det, blend_rule=s.blend_rule, seed=s.seed)
    gens = {"OT (extended)": OTGenerator(extension="piecewise-linear", **ot),
            "OT (plain)": OTGenerator(extension="none", **ot),
            "DiT DDPM": DiffusionGenerator(art.dit, art.latent, method="ddpm", num_inference_steps=s.ddpm_steps),
            "DiT DDIM": DiffusionGenerator(art.dit, art.latent, method="ddim", num_inference_steps=s.ddim_steps),
            "MLP DDPM": DiffusionGenerator(art.mlp, art.latent, method="ddpm", num_inference_steps=s.ddpm_steps)}
    return det, {name: g.fit(art.codes) for name, g in gens.items()}


def _decode(art, codes):
    return np.clip(np.asarray(art.ae.decode(np.asarray(codes, np.float32))), 0.0, 1.0)


def sample(settings: VideoSettings, art: VideoArtifacts, generators: dict, *, verbose: bool = False) -> dict:
    """``n_samples`` codes of every generator and floor, decoded: name -> dict(codes, z, clips, info, seconds)."""
    s, out = settings, {}
    for name, gen in tqdm(generators.items(), desc="sampling", disable=not verbose, leave=False):
        codes, info, secs = timed_sample(gen, s.n_samples, spawn_seed(s.seed, "sample", name))
        out[name] = dict(codes=codes, info=info, seconds=secs, clips=_decode(art, codes))
    idx = np.random.default_rng(spawn_seed(s.seed, "floors")).choice(s.n_test, min(s.n_samples, s.n_test), replace=False)
    x = art.test[0][idx]
    codes = np.asarray(art.ae.encode(x), np.float32)
    out[FLOORS[0]] = dict(codes=codes, info={}, seconds=None, clips=np.asarray(x))
    out[FLOORS[1]] = dict(codes=codes, info={}, seconds=None, clips=_decode(art, codes))
    for r in out.values():
        r["z"] = art.latent.transform(r["codes"])
    return out


def score(settings: VideoSettings, art: VideoArtifacts, samples: dict) -> dict:
    """The instruments' rates and the latent scores of every row: name -> metrics dict."""
    s = settings
    z_test = art.latent.transform(np.asarray(art.ae.encode(art.test[0]), np.float32))
    radius = COPY_RADIUS * nn_median(art.z)
    rows = {}
    for name, r in samples.items():
        m = {k: v for k, v in plausibility(s.dataset, r["clips"]).items() if not isinstance(v, np.ndarray)}
        n = len(r["z"])
        m.update(implausible_se=binomial_se(m["implausible_rate"], n), **latent_scores(r, z_test, art.z, radius, s.seed))
        rows[name] = m
    return rows


def detection(settings: VideoSettings, art: VideoArtifacts, det) -> dict:
    """Bistable: flag held-out clips whose nearest OT target is a boundary cell; precision / recall per rule."""
    s = settings
    z_test = art.latent.transform(np.asarray(art.ae.encode(art.test[0]), np.float32))
    truth = art.test[1]["state"] == 2
    w = art.ot.weights_.detach().cpu().numpy()
    kw = {"minor-mode": dict(min_size=s.min_size, weights=w), "fraction": {}, "incident": {}}
    flags = {rule: flag_codes(z_test, art.ot, det, rule=rule, **kw[rule]) for rule in DETECT_RULES}
    return {"rule": s.detect_rule, "primary": detection_scores(flags[s.detect_rule], truth),
            "rules": {rule: detection_scores(f, truth) for rule, f in flags.items()},
            "boundary_cells": {rule: int(boundary_cells(det, rule, **kw[rule]).sum()) for rule in DETECT_RULES},
            "flags": flags[s.detect_rule], "z_test": z_test}


def localisation(settings: VideoSettings, art: VideoArtifacts, det, n_long: int | None = None) -> dict:
    """Bistable: locate the transition of long clips along their sliding-window latent paths."""
    s = settings
    x_long, lab = bistable_long(n_long or s.n_long, n_frames=s.long_frames, seed=spawn_seed(s.seed, "long clips"))
    return localise_transitions(art.ae.encode, x_long, lab["transition_frame"], art.ot, det, art.latent,
                                window=int(art.train[0].shape[1]))


def critical(settings: VideoSettings, art: VideoArtifacts, det, target_index, n_points: int | None = None) -> dict:
    """Bistable: source points on the singular set, their two boundary targets decoded, and their midpoints."""
    s = settings
    cs = critical_states(art.ot, det, n_points or s.n_critical, seed=spawn_seed(s.seed, "critical"))
    Y = art.ot.targets_.detach().cpu().numpy()
    out = dict(n_points=int(len(cs["i"])), drawn=cs["drawn"], flagged_fraction=cs["flagged_fraction"],
               kept_fraction=cs["kept_fraction"], seconds=cs["seconds"], i=cs["i"], j=cs["j"], sets={},
               data_rate=float((art.train[1]["state"] == 2).mean()))
    if not len(cs["i"]):
        return out
    for name, z in ((CRITICAL[0], np.concatenate([Y[cs["i"]], Y[cs["j"]]])), (CRITICAL[1], 0.5 * (Y[cs["i"]] + Y[cs["j"]]))):
        codes = art.latent.inverse_transform(z.astype(np.float32))
        out["sets"][name] = dict(codes=codes, z=z, clips=_decode(art, codes), info={}, seconds=cs["seconds"])
    state_of_target = np.full(len(Y), -1)
    state_of_target[target_index] = art.train[1]["state"]
    minor = boundary_cells(det, "minor-mode", min_size=s.min_size, weights=art.ot.weights_.detach().cpu().numpy())
    out.update(sides_are_training_transitions=float((state_of_target[np.concatenate([cs["i"], cs["j"]])] == 2).mean()),
               pairs_touching_minor_mode=float((minor[cs["i"]] | minor[cs["j"]]).mean()))
    return out


def _summary(settings, art, det, rows, extras, seconds) -> dict:
    s, ot, hist = settings, art.ot, art.ot.history_
    m = {"dataset": s.dataset, "settings": dict(asdict(s), ae=s.ae_config(), dit=DIT_DEFAULTS,
                                                clip_shape=list(art.train[0].shape[1:])),
         "rows": rows, "data": {"train_label_counts": np.bincount(art.train[2]).tolist()},
         "ae": dict(test_mse=art.ae.reconstruction_error(art.test[0]), fit_seconds=art.cache.seconds["video-autoencoder"],
                    latent_dim=int(art.z.shape[1]), final_epoch_loss=float(art.ae.history_["loss"][-1])),
         "ot": dict(fit_seconds=art.cache.seconds["video-ot"], n_iter=int(ot.n_iter_), converged=bool(ot.converged_),
                    tv_error=float(hist[-1]["tv"]) if hist else None, n_targets=int(ot.targets_.shape[0])),
         "detector": dict(n_components=int(det.n_components_), threshold=float(det.threshold_),
                          rule=(f"quantile {s.angle_quantile}" if s.angle_quantile is not None else str(s.angle_threshold)),
                          blend_rule=s.blend_rule, n_pairs=int(len(det.pairs_)), n_singular_pairs=int(len(det.singular_pairs_)),
                          angle_median=float(np.median(det.angles_)) if len(det.angles_) else None,
                          angle_max=float(det.angles_.max()) if len(det.angles_) else None,
                          largest_modes=np.sort(np.bincount(det.cell_component_))[::-1][:4].tolist()),
         "diffusion": {"DiT": dict(n_steps=s.dit_steps, fit_seconds=art.cache.seconds["video-dit"],
                                   loss=loss_plateau(art.dit.history_["loss"])),
                       "MLP": dict(n_steps=s.diffusion_steps, fit_seconds=art.cache.seconds["video-mlp"],
                                   loss=loss_plateau(art.mlp.history_["loss"]))},
         "timings": dict(fit_seconds=dict(art.cache.seconds), total=seconds),
         "environment": dict(device=str(ot.targets_.device), torch_threads=torch.get_num_threads()),
         "cache_hits": dict(art.cache.hits), "all_cached": all(art.cache.hits.values())}
    if "detection" in extras:
        d, loc, c = extras["detection"], extras["localisation"], extras["critical"]
        m["data"]["train_transition_rate"] = float((art.train[1]["state"] == 2).mean())
        m["detection"] = {k: v for k, v in d.items() if k not in ("flags", "z_test")}
        m["localisation"] = {k: v for k, v in loc.items() if k not in ("paths", "starts", "modes", "estimate", "truth",
                                                                    "error")}
        m["critical"] = {k: v for k, v in c.items() if k not in ("i", "j", "sets")}
        if c["n_points"]:
            sides, mid = rows[CRITICAL[0]], rows[CRITICAL[1]]
            m["critical"].update(sides_transition_rate=sides["transition_rate"], mid_transition_rate=mid["transition_rate"],
                                 mid_blend_rate=mid["blend_rate"],
                                 enrichment=sides["transition_rate"] / max(c["data_rate"], 1e-12))
    return m


def run(settings: VideoSettings, out_dir, *, cache_dir=None, device=None, verbose: bool = False) -> VideoRun:
    """fit -> generators -> sample -> score (+ bistable: detection, localisation, critical) -> metrics.json, report.md.

    The schema of metrics.json: ``dataset``, ``settings``, ``rows`` {generator or floor (or critical set):
    instrument rates, ``implausible_se``, ``sw_latent``, ``copy_rate``, ``samples_per_s``}, ``data``, ``ae``,
    ``ot``, ``detector``, ``diffusion`` (loss plateaus), ``timings``, ``environment``, ``cache_hits``,
    ``all_cached``; bistable adds ``detection``, ``localisation``, ``critical``.
    """
    t0 = time.perf_counter()
    out_dir = check_out_dir(out_dir)
    cache = Cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir)
    art = fit(settings, cache, device=device, verbose=verbose)
    det, gens = make_generators(settings, art)
    samples = sample(settings, art, gens, verbose=verbose)
    extras = {}
    if settings.dataset == "bistable":
        extras = dict(detection=detection(settings, art, det), localisation=localisation(settings, art, det),
                      critical=critical(settings, art, det, gens["OT (extended)"].target_index_))
        samples.update(extras["critical"]["sets"])
    rows = score(settings, art, samples)
    metrics = _summary(settings, art, det, rows, extras, time.perf_counter() - t0)
    paths = dict(metrics=write_json(os.path.join(out_dir, "metrics.json"), metrics),
                 report=write_text(os.path.join(out_dir, "report.md"), report(metrics)))
    return VideoRun(settings, art, det, samples, metrics, extras, paths)


def critical_sets(settings: VideoSettings, art: VideoArtifacts, det, generators: dict, *, n_points: int = 100) -> dict:
    """Bistable, for the figure: decoded clips on both sides of the singular set (interleaved) and
    ``2 n_points`` DiT DDPM and MLP DDPM samples; name -> clips."""
    c = critical(settings, art, det, generators["OT (extended)"].target_index_, n_points=n_points)
    sets = {}
    if c["n_points"]:
        m = c["n_points"]
        order = np.ravel(np.stack([np.arange(m), np.arange(m) + m], 1))     # the two sides alternate
        sets["OT on the singular set (both sides)"] = c["sets"][CRITICAL[0]]["clips"][order]
    for name in ("DiT DDPM", "MLP DDPM"):
        codes = generators[name].sample(max(2 * c["n_points"], 2), seed=spawn_seed(settings.seed, "figure", name))
        sets[name] = _decode(art, codes)
    return dict(sets=sets, critical=c)


# ----------------------------------------------------------------------------- report

_COLUMNS = {
    "bistable": [("steady", "steady_rate"), ("transition", "transition_rate"), ("teleport", "teleport_rate"),
                 ("blend", "blend_rate"), ("empty", "empty_rate"), ("barrier", "barrier_rate")],
    "permanence": [("count changes", "changed_rate"), ("3 objects", "count_3"), ("4 objects", "count_4"),
                   ("other count", "count_other")],
    "moving-digits": [("mass change", "mass_change_rate"), ("jump", "jump_rate"), ("empty frame", "empty_rate")],
}


def _table(dataset, rows) -> str:
    cols = _COLUMNS[dataset]
    head = ["generator"] + [c for c, _ in cols] + ["implausible", "SW latent", "copies", "samples/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name] + [fmt(r.get(k)) for _, k in cols]
        cells += [f"{fmt(r['implausible_rate'])} ± {fmt(r['implausible_se'])}", fmt(r.get("sw_latent")),
                  fmt(r.get("copy_rate")), fmt(r.get("samples_per_s"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _bistable_sections(m) -> list:
    d, loc, c = m["detection"], m["localisation"], m["critical"]
    lines = ["## Detection of transition clips among held-out real clips\n",
             "| rule | boundary cells | flagged | precision | recall | F1 | positives / clips |", "|---|---|---|---|---|---|---|"]
    for rule, r in d["rules"].items():
        lines.append(f"| {rule}{' (primary)' if rule == d['rule'] else ''} | {d['boundary_cells'][rule]} | {r['flagged']} | "
                     f"{fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1'])} | {r['positives']} / {r['n']} |")
    lines += ["", "## Localisation of the transition in long clips\n",
              f"| clips | frames | window | located | mean abs error | median abs error | within ±{loc['tolerance']} |",
              "|---|---|---|---|---|---|---|",
              f"| {loc['n_clips']} | {loc['n_frames']} | {loc['window']} | {fmt(loc['located'])} | "
              f"{fmt(loc['mean_abs_error'], 2)} | {fmt(loc['median_abs_error'], 2)} | {fmt(loc['within_tol'])} |", "",
              "## Critical-state generation from the singular set\n",
              "| source points kept | flagged / kept fraction | transitions (both sides) | data rate | enrichment | "
              "sides that are training transitions | transitions (midpoint) | blends (midpoint) |",
              "|---|---|---|---|---|---|---|---|",
              f"| {c['n_points']} | {fmt(c['flagged_fraction'], 4)} / {fmt(c['kept_fraction'], 4)} | "
              f"{fmt(c.get('sides_transition_rate'))} | {fmt(c['data_rate'])} | {fmt(c.get('enrichment'), 2)} | "
              f"{fmt(c.get('sides_are_training_transitions'))} | {fmt(c.get('mid_transition_rate'))} | "
              f"{fmt(c.get('mid_blend_rate'))} |", ""]
    return lines


def _discussion(m) -> list:
    s, rows, ds = m["settings"], m["rows"], m["dataset"]
    n, key, det = s["n_samples"], HEADLINE[ds], m["detector"]
    ot, dit, rec = rows["OT (extended)"], rows["DiT DDPM"], rows[FLOORS[1]]
    lines = [f"- {key.replace('_', ' ')}: " + ", ".join(f"{k} {fmt(rows[k][key])}" for k in GENERATORS + FLOORS) + ".",
             f"- OT (extended) − DiT DDPM (implausible) = {ot['implausible_rate'] - dit['implausible_rate']:+.3f}, standard "
             f"error {difference_se(ot['implausible_rate'], dit['implausible_rate'], n):.3f}; excess over the "
             f"reconstruction floor: OT (extended) {ot['implausible_rate'] - rec['implausible_rate']:+.3f}, DiT DDPM "
             f"{dit['implausible_rate'] - rec['implausible_rate']:+.3f}.",
             f"- Detector: {det['n_components']} mode(s) among {m['ot']['n_targets']} cells (largest {det['largest_modes']}), "
             f"threshold {fmt(det['threshold'])} rad ({det['rule']}; blend rule {det['blend_rule']}); "
             f"{det['n_singular_pairs']} singular of {det['n_pairs']} adjacent pairs; neighbour angles median "
             f"{fmt(det['angle_median'])}, max {fmt(det['angle_max'])} rad.",
             f"- OT (plain) copies training codes at rate {fmt(rows['OT (plain)']['copy_rate'])}, OT (extended) at "
             f"{fmt(ot['copy_rate'])}: read them against the reconstruction floor, not as novel clips."]
    for name, dm in m["diffusion"].items():
        lp = dm["loss"]
        lines.append(f"- {name} diffusion: {dm['n_steps']} training steps, loss last 10 % {lp['last_10pct']:.4f}, "
                     f"previous 10 % {lp['previous_10pct']:.4f} (relative change {lp['relative_change']:+.2%}).")
    lines.append(f"- AE held-out MSE {m['ae']['test_mse']:.5f}; OT {m['ot']['n_iter']} iterations, converged "
                 f"{m['ot']['converged']}, TV {fmt(m['ot']['tv_error'], 4)}; total {m['timings']['total']:.0f} s.")
    return lines


def report(metrics: dict) -> str:
    """report.md: tables and what they say, from measured values only."""
    m, s = metrics, metrics["settings"]
    lines = [f"# Video ({m['dataset']}): semi-discrete OT vs a diffusion transformer on clip latents\n",
             f"{s['n_train']} training clips {tuple(s['clip_shape'])}, autoencoder latent {s['ae']['latent_tokens']} "
             f"tokens x {s['ae']['token_dim']} = {m['ae']['latent_dim']} numbers; {s['n_samples']} samples per generator "
             "decoded by the same autoencoder and read by pixel instruments (rate ± binomial standard error); floors on "
             f"held-out real clips. DiT: {s['dit_steps']} training steps; MLP DDPM: {s['diffusion_steps']}; sampling "
             f"DDPM {s['ddpm_steps']} / DDIM {s['ddim_steps']} steps.\n",
             "## Physical plausibility (pixel instruments)\n", _table(m["dataset"], m["rows"]) + "\n"]
    if "detection" in m:
        lines += _bistable_sections(m)
    return "\n".join(lines + ["## Discussion\n"] + _discussion(m)) + "\n"
