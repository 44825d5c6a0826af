"""MNIST: semi-discrete OT against latent diffusion in one autoencoder latent space.

Stages, each a function of the frozen :class:`MNISTSettings`:

1. :func:`fit` -- train (or load from the :class:`~otgen.experiments.Cache`) an image
   autoencoder and a digit classifier on the training digits; encode; fit one
   :class:`~otgen.latent.LatentSpace` (standardised codes); fit semi-discrete OT from the
   uniform cube to the standardised codes and a latent diffusion model of the same codes.
2. :func:`make_generators` -- the singular-set detector of the OT map, and five generators
   behind one interface (raw codes out): OT extended (AE-OT piecewise-linear extension,
   never across the singular set [1]_), OT plain (:math:`\\nabla u_h`), DDPM [2]_, DDIM [3]_,
   and the Gaussian fitted to the codes.
3. :func:`sample` -- ``n_samples`` codes from every generator (one timed batch each) and the
   floors: real training digits, their reconstructions :math:`D(E(x))` (the best any
   generator in this latent can do), the same for held-out digits (which, like a generated
   digit, neither the classifier nor the autoencoder has seen; their distribution metrics are
   not reported, since they are the reference set) and uniform pixel noise; everything decoded.
4. :func:`score` -- every metric against the held-out test digits (mode-mixture rate over τ
   with its binomial standard error, low confidence, class KL, FID / precision / recall /
   density / coverage in classifier features), the sliced Wasserstein distance in the
   standardised latent, the fraction of copies of training codes, samples per second.
5. :func:`report` -- markdown that formats measured values only.

:func:`run` chains them and writes ``metrics.json`` and ``report.md``; the figures are drawn
from its result by :mod:`otgen.figures.mnist_mode_mixture`.

References
----------
.. [1] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [2] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
.. [3] J. Song, C. Meng, S. Ermon, "Denoising diffusion implicit models", ICLR 2021.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from otgen._base import spawn_seed
from otgen._validation import resolve_device
from otgen.autoencoder import ImageAutoencoder, SeparatedLatent
from otgen.data.mnist import load_mnist
from otgen.diffusion import LatentDiffusion
from otgen.experiments._cache import Cache
from otgen.experiments._common import (binomial_se, check_out_dir, check_settings_fields, difference_se, fmt,
                                       host_gflops, latent_scores, timed_sample, write_json, write_text)
from otgen.generate import DiffusionGenerator, GaussianCodeGenerator, OTGenerator
from otgen.latent import LatentSpace
from otgen.metrics import (MNISTClassifier, angle_separation, between_modes_rate, classifier_outputs, digit_metrics,
                           knn_label_agreement, loss_plateau, mode_recovery, nn_median, off_support_rate, roc_auc)
from otgen.singular import SingularSetDetector
from otgen.transport import SemiDiscreteOT

__all__ = ["MNISTSettings", "MNISTArtifacts", "MNISTRun", "fit", "make_generators", "sample", "score",
           "latent_geometry", "detectors", "cell_labels", "facet_angles", "report", "run", "mode_mixture_points", "GENERATORS", "FLOORS",
           "NAMES"]

#: metrics.json keys of the generators and floors -> their names in the report and figures
GENERATORS = {"ot_extended": "OT (extended)", "ot_plain": "OT (plain)", "ddpm": "DDPM", "ddim": "DDIM",
              "dpm_solver": "DPM-Solver++", "gaussian": "Gaussian"}
FLOORS = {"real": "real digits", "reconstruction": "AE reconstructions", "real_heldout": "real digits (held-out)",
          "reconstruction_heldout": "AE reconstructions (held-out)", "noise": "uniform noise"}
NAMES = {**GENERATORS, **FLOORS}
#: metrics measured against the held-out digits: not reported for the held-out digits themselves
REFERENCE_METRICS = ("fid", "precision", "recall", "density", "coverage")
DIFFUSION_ROWS = ("ddpm", "ddim", "dpm_solver")   # the diffusion samplers OT is compared against
COPY_RADIUS = 0.01           # a sample within this fraction of the median NN distance of a training code copies it
MIN_TRAIN = 10               # a subset smaller than this cannot hold the ten digits
SEPARATED_AGREEMENT = 0.95  # the issue's target: at this 10-NN agreement the digits' modes no longer touch
NEIGHBOURS = 10              # k of the latent instruments (k-NN agreement, between-modes votes), as in the issue
MAJORITY = 0.7               # a code is between modes when no label has this share of its neighbours' votes


def _check_taus(taus, name):
    if not isinstance(taus, tuple) or not taus or any(isinstance(t, bool) or not isinstance(t, (int, float))
                                                      or not 0 < t <= 1 for t in taus):
        raise ValueError(f"{name} must be a non-empty tuple of numbers in (0, 1], got {taus!r}")


def _build_ae(s, dev, verbose, **extra):
    kw = dict(dict(latent_dim=s.dim(), epochs=s.epochs()), **extra)
    return ImageAutoencoder(device=dev, seed=s.seed, verbose=verbose, **kw)


def _build_separated(s, dev, verbose):
    return SeparatedLatent(latent_dim=s.dim(), autoencoder=_build_ae(s, dev, verbose, latent_dim=SEPARATED_DECODER_DIM),
                           device=dev, seed=s.seed, verbose=verbose)


SEPARATED_DECODER_DIM = 32   # the separated latent decodes through a 32-D autoencoder: reconstruction floor 0.033


class Latent(NamedTuple):
    """One choice of ``--latent``."""

    help: str             # what it is (the CLI's help)
    build: Callable       # (settings, device, verbose) -> an unfitted latent model with fit / encode / decode
    labelled: bool        # fitted with the labels (a control, never a default)
    dim: int              # default latent dimension
    epochs: int           # default autoencoder epochs
    angle_rule: str       # default threshold rule of the detector: the rule its README row was measured with


#: The latents of ``--latent``. Measured on the embedded digits (README): held-out 10-NN label agreement
#: ae 0.877, ae-aug 0.918, separated 0.961 (10-D), 0.959 (2-D, exaggeration 4); held-out reconstructions' mixed
#: rate at tau 0.2 ae-aug 0.039, separated 0.008 (held-out real digits 0.027). Where the digits' modes touch (ae,
#: ae-aug) the facet angles have no gap and every rule finds one mode; the ``modes`` rule is the one that recovers
#: the digits where they are separated.
LATENTS = {
    "ae": Latent("the 8-D convolutional autoencoder (the control)", _build_ae, False, 8, 20, "gap"),
    "ae-aug": Latent("a 32-D autoencoder trained on augmented digits (affine + elastic): the lower decoder floor",
                     lambda s, dev, verbose: _build_ae(s, dev, verbose, augment=True), False, 32, 30, "gap"),
    "separated": Latent("unsupervised: contrastive (SimCLR) features -> neighbour embedding, decoded through a 32-D "
                        "autoencoder; no labels, no number of clusters", _build_separated, False, 10, 20, "modes"),
    "supervised": Latent("LABELLED CONTROL, never a default: the autoencoder with a classification head on its code",
                         lambda s, dev, verbose: _build_ae(s, dev, verbose, label_weight=1.0), True, 8, 20, "modes"),
}


@dataclass(frozen=True)
class MNISTSettings:
    """Every setting of the MNIST comparison, with its default and why (where it was measured)."""

    latent: str = field(default="separated", metadata=dict(
        check=tuple(LATENTS), help="the latent space: " + "; ".join(f"{k}: {v[0]}" for k, v in LATENTS.items())))
    latent_dim: int | None = field(default=None, metadata=dict(
        check="int", optional=True, help="latent code dimension (default: ae 8, ae-aug 32, separated 10, supervised 8)"))
    ae_epochs: int | None = field(default=None, metadata=dict(
        check="int", optional=True, help="autoencoder epochs (default: ae, separated, supervised 20, held-out MSE "
        "0.019 for ae; ae-aug 30: augmented digits need longer)"))
    clf_epochs: int = field(default=20, metadata=dict(
        check="int", help="classifier epochs (test accuracy 0.98 on the embedded digits)"))
    n_train: int | None = field(default=None, metadata=dict(
        check="int", minimum=MIN_TRAIN, optional=True, help="a seeded subset of the training digits (default: all)"))
    data_dir: str | None = field(default=None, metadata=dict(
        help="folder with the full MNIST IDX files (default: the embedded 5,000 digits)"))
    diffusion_steps: int = field(default=10000, metadata=dict(
        check="int", help="training steps of the latent DDPM (its loss is flat by then: see the report)"))
    ot_tol: float = field(default=0.03, metadata=dict(check="float", help="total-variation tolerance of the OT solve"))
    ot_max_iter: int = field(default=100, metadata=dict(check="int", help="Newton iterations of the OT solve"))
    n_samples: int = field(default=5000, metadata=dict(
        check="int", help="samples per generator and per floor (a rate's standard error is ~0.003 at 5000; "
        "the real-digit floor holds at most the training digits)"))
    ddpm_steps: int = field(default=1000, metadata=dict(check="int", help="DDPM sampling steps"))
    ddim_steps: int = field(default=50, metadata=dict(check="int", help="DDIM sampling steps"))
    dpm_steps: int = field(default=20, metadata=dict(check="int", help="DPM-Solver++ (2M) sampling steps (the fastest "
                                                                        "diffusion sampler; 10-20 steps are its usual range)"))
    k: int = field(default=5, metadata=dict(check="int", help="neighbours of the k-NN metrics"))
    taus: tuple = field(default=(0.1, 0.2, 0.3, 0.4), metadata=dict(
        check=_check_taus, help="mode-mixture thresholds: a digit is mixed when two classes have probability >= tau"))
    tau: float = field(default=0.2, metadata=dict(check="float", help="the threshold of the headline and figures"))
    angle_rule: str | None = field(default=None, metadata=dict(
        check=("gap", "ratio", "persistence", "modes"), optional=True, help="the detector's threshold rule (gap: no "
        "boundary without a gap in the angles; modes: persistent components, not told their number) (default: "
        + ", ".join(f"{k} {v.angle_rule}" for k, v in LATENTS.items()) + ")"))
    angle_quantile: float | None = field(default=None, metadata=dict(
        check="fraction", optional=True, help="detector threshold at this quantile of the neighbour angles "
        "(replaces --angle-rule; a hyper-parameter: the MNIST angles show no gap)"))
    blend_rule: str = field(default="component", metadata=dict(
        check=("component", "facet"), help="the extended OT map blends cells of one mode (component) or of no "
        "singular facet (facet, AE-OT's local rule)"))
    seed: int = field(default=0, metadata=dict(check="seed", help="the one seed every random stream is spawned from"))

    def __post_init__(self):
        object.__setattr__(self, "taus", tuple(self.taus) if isinstance(self.taus, list) else self.taus)
        check_settings_fields(self)
        if self.n_samples <= self.k:
            raise ValueError(f"n_samples must exceed k = {self.k}, got {self.n_samples}")
        if self.tau not in self.taus:
            raise ValueError(f"tau = {self.tau} must be one of taus = {self.taus} (the report reads it from them)")

    def dim(self) -> int:
        return LATENTS[self.latent].dim if self.latent_dim is None else self.latent_dim

    def epochs(self) -> int:
        return LATENTS[self.latent].epochs if self.ae_epochs is None else self.ae_epochs

    def rule(self) -> str:
        """The detector's threshold rule: ``angle_rule``, else the latent's own."""
        return LATENTS[self.latent].angle_rule if self.angle_rule is None else self.angle_rule

    def detector_rule(self) -> str:
        return self.rule() if self.angle_quantile is None else f"quantile {self.angle_quantile:g}"

    def ae_key(self) -> dict:
        """What determines the autoencoder (and every model fitted on its codes)."""
        return dict(data_dir=None if self.data_dir is None else os.path.abspath(self.data_dir), latent=self.latent,
                    n_train=self.n_train, seed=self.seed, latent_dim=self.dim(), ae_epochs=self.epochs())


@dataclass
class MNISTArtifacts:
    """The fitted models and data of :func:`fit` (codes raw (n, d); ``z`` standardised)."""

    train: tuple
    test: tuple
    ae: object                  # the latent model: encode, decode, reconstruct (an ImageAutoencoder or another latent)
    clf: MNISTClassifier
    latent: LatentSpace
    ot: SemiDiscreteOT
    diffusion: LatentDiffusion
    codes: np.ndarray
    z: np.ndarray
    cache: Cache


@dataclass
class MNISTRun:
    """Everything :func:`run` produced: what the figures draw from."""

    settings: MNISTSettings
    artifacts: MNISTArtifacts
    detector: SingularSetDetector
    samples: dict
    metrics: dict
    paths: dict


def _train_subset(train, n_train, seed):
    if n_train is None or n_train >= len(train[0]):
        return train
    idx = np.sort(np.random.default_rng(spawn_seed(seed, "train subset")).choice(len(train[0]), n_train, replace=False))
    return train[0][idx], train[1][idx]


def fit(settings: MNISTSettings, cache: Cache | None = None, *, device=None, verbose: bool = False) -> MNISTArtifacts:
    """Train or load the autoencoder, classifier, OT map and latent diffusion model."""
    s, cache, dev = settings, cache or Cache(None), resolve_device(device)
    train = _train_subset(load_mnist("train", data_dir=s.data_dir, seed=s.seed), s.n_train, s.seed)
    test = load_mnist("test", data_dir=s.data_dir, seed=s.seed)
    model, labelled = LATENTS[s.latent].build(s, dev, verbose), LATENTS[s.latent].labelled
    ae = cache.get_or_fit("autoencoder", s.ae_key(), lambda: model.fit(*(train if labelled else train[:1])),
                          type(model), dev, verbose=verbose)
    clf_key = dict(s.ae_key(), latent=None, latent_dim=None, ae_epochs=None, clf_epochs=s.clf_epochs)
    clf = cache.get_or_fit("classifier", clf_key, lambda: MNISTClassifier(
        epochs=s.clf_epochs, device=dev, seed=s.seed, verbose=verbose).fit(*train), MNISTClassifier, dev,
        verbose=verbose)
    codes = np.asarray(ae.encode(train[0]), np.float32)                         # (n, d)
    latent = LatentSpace().fit(codes)
    # 2-D latents (the figure): exact power diagrams; near-duplicate 2-D codes stall the sampled Hessian
    method = "exact2d" if s.dim() == 2 else "stochastic"
    ot_key = dict(s.ae_key(), tol=s.ot_tol, max_iter=s.ot_max_iter, method=method)
    ot = cache.get_or_fit("ot", ot_key, lambda: OTGenerator(latent=latent, ot=SemiDiscreteOT(
        tol=s.ot_tol, max_iter=s.ot_max_iter, method=method, device=dev, seed=s.seed, verbose=verbose)
    ).fit(codes).ot_, SemiDiscreteOT, dev, verbose=verbose)
    dm = cache.get_or_fit("diffusion", dict(s.ae_key(), n_steps=s.diffusion_steps), lambda: LatentDiffusion(
        latent=latent, n_steps=s.diffusion_steps, device=dev, seed=s.seed, verbose=verbose).fit(codes),
        LatentDiffusion, dev, verbose=verbose)
    return MNISTArtifacts(train, test, ae, clf, latent, ot, dm, codes, latent.transform(codes), cache)


def make_generators(settings: MNISTSettings, art: MNISTArtifacts):
    """The detector of the OT map and the five generators, fitted on the training codes."""
    s = settings
    rule = dict(angle_threshold=s.rule()) if s.angle_quantile is None else \
        dict(angle_threshold="quantile", quantile=s.angle_quantile)
    det = SingularSetDetector(seed=spawn_seed(s.seed, "detector"), **rule).fit(art.ot)
    ot = dict(latent=art.latent, ot=art.ot, detector=det, blend_rule=s.blend_rule, seed=s.seed)
    gens = {"ot_extended": OTGenerator(extension="piecewise-linear", **ot),
            "ot_plain": OTGenerator(extension="none", **ot),
            "ddpm": DiffusionGenerator(art.diffusion, art.latent, method="ddpm", num_inference_steps=s.ddpm_steps),
            "ddim": DiffusionGenerator(art.diffusion, art.latent, method="ddim", num_inference_steps=s.ddim_steps),
            "dpm_solver": DiffusionGenerator(art.diffusion, art.latent, method="dpm_solver",
                                             num_inference_steps=s.dpm_steps),
            "gaussian": GaussianCodeGenerator(art.latent, seed=s.seed)}
    return det, {name: g.fit(art.codes) for name, g in gens.items()}


def sample(settings: MNISTSettings, art: MNISTArtifacts, generators: dict, *, verbose: bool = False) -> dict:
    """``n_samples`` codes of every generator and floor: key -> dict(codes, z, images, outputs, info, seconds).

    ``outputs``: the classifier's (probabilities, features) of the images, computed once for every
    later stage. The real-digit floor holds at most as many digits as the training set.
    """
    s, out = settings, {}
    for name, gen in tqdm(generators.items(), desc="sampling", disable=not verbose, leave=False):
        codes, info, secs = timed_sample(gen, s.n_samples, spawn_seed(s.seed, "sample", name))
        out[name] = dict(codes=codes, info=info, seconds=secs)
    rng = np.random.default_rng(spawn_seed(s.seed, "floors"))
    idx = rng.choice(len(art.codes), size=min(s.n_samples, len(art.codes)), replace=False)
    x_real = art.train[0][idx]
    # held-out digits: neither the classifier nor the autoencoder has seen them, as it has not seen a generated one
    x_held = art.test[0][rng.choice(len(art.test[0]), size=min(s.n_samples, len(art.test[0])), replace=False)]
    codes_held = np.asarray(art.ae.encode(x_held), np.float32)
    noise = rng.random((s.n_samples, 28, 28), dtype=np.float32)
    floors = {"real": (x_real, art.codes[idx]), "reconstruction": (art.ae.reconstruct(x_real), art.codes[idx]),
              "real_heldout": (x_held, codes_held), "reconstruction_heldout": (art.ae.decode(codes_held), codes_held),
              "noise": (noise, np.asarray(art.ae.encode(noise), np.float32))}
    for name, (images, codes) in floors.items():
        out[name] = dict(codes=codes, images=images, info={}, seconds=None)
    for r in out.values():
        r["z"] = art.latent.transform(r["codes"])
        if "images" not in r:
            r["images"] = art.ae.decode(r["codes"])
        r["outputs"] = classifier_outputs(art.clf, r["images"])          # (n, 10), (n, F)
    return out


def score(settings: MNISTSettings, art: MNISTArtifacts, samples: dict) -> dict:
    """Every metric of every row (generators and floors): key -> metrics dict.

    Decoded (classifier): ``mixed_rate`` {τ: rate} with ``mixed_rate_se``, ``excess_mixed_rate`` over the
    reconstruction floor with its standard error, low confidence, class KL, FID / precision / recall /
    density / coverage in classifier features. Latent (standardised codes, no decoder):
    ``between_modes_rate`` (± se), ``off_support_rate``, ``copies``, ``sw_latent``. Speed: ``samples_per_s``.
    """
    s = settings
    z_test = art.latent.transform(np.asarray(art.ae.encode(art.test[0]), np.float32))
    radius = COPY_RADIUS * nn_median(art.z)
    rows = {}
    real = classifier_outputs(art.clf, art.test[0])          # the reference set's outputs, once for every row
    for key, r in samples.items():
        m = digit_metrics(art.clf, r["images"], art.test[0], k=s.k, taus=s.taus, device="cpu", real_outputs=real,
                          fake_outputs=r["outputs"])
        n = len(r["z"])
        m["mixed_rate"] = m.pop("mode_mixture")
        m["mixed_rate_se"] = {t: binomial_se(v, n) for t, v in m["mixed_rate"].items()}
        between = between_modes_rate(r["z"], art.z, art.train[1], k=NEIGHBOURS, majority=MAJORITY)
        m.update(between_modes_rate=between, between_modes_se=binomial_se(between, n),
                 off_support_rate=off_support_rate(r["z"], art.z)["rate"], **latent_scores(r, z_test, art.z, radius, s.seed))
        m["copies"] = m.pop("copy_rate")
        if key == "real_heldout":   # these digits are the reference set of the distribution metrics themselves
            m.update({k: None for k in REFERENCE_METRICS})
        rows[key] = m
    floor = rows["reconstruction"]
    for m in rows.values():
        m["excess_mixed_rate"] = {t: v - floor["mixed_rate"][t] for t, v in m["mixed_rate"].items()}
        m["excess_mixed_rate_se"] = {t: float(np.hypot(se, floor["mixed_rate_se"][t]))
                                     for t, se in m["mixed_rate_se"].items()}
    return rows


def cell_labels(art: MNISTArtifacts, ot_generator: OTGenerator) -> np.ndarray:
    """The digit of every OT target (N,): the majority label of the training codes merged into it."""
    votes = np.zeros((art.ot.targets_.shape[0], int(art.train[1].max()) + 1))
    np.add.at(votes, (ot_generator.target_index_, art.train[1]), 1.0)
    return votes.argmax(1)


def facet_angles(art: MNISTArtifacts, det, generators: dict) -> dict:
    """Facet angles of adjacent cells holding the same digit (``within``) and different digits (``between``)."""
    labels = cell_labels(art, generators["ot_extended"])
    differ = labels[det.pairs_[:, 0]] != labels[det.pairs_[:, 1]]
    return dict(within=det.angles_[~differ], between=det.angles_[differ], threshold=float(det.threshold_))


def latent_geometry(settings: MNISTSettings, art: MNISTArtifacts, det, generators: dict) -> dict:
    """Is the latent separated? k-NN label agreement, facet-angle separation, the detector's modes vs digits."""
    z_test = art.latent.transform(np.asarray(art.ae.encode(art.test[0]), np.float32))
    labels = cell_labels(art, generators["ot_extended"])
    angles = angle_separation(det, labels)
    modes = mode_recovery(det.cell_component_, labels, weights=art.ot.weights_.detach().cpu().numpy())
    return dict(name=settings.latent, dim=int(art.z.shape[1]),
                knn_agreement=knn_label_agreement(z_test, art.test[1], art.z, art.train[1], k=NEIGHBOURS),
                angle_auc=angles["auc"], angle_gap=angles["has_gap"], angle_gap_ratio=angles["gap_ratio"],
                angle_within_median=angles["within_median"], angle_between_median=angles["between_median"],
                n_modes=modes["n_modes"], n_components=modes["n_components"], mode_ari=modes["ari"],
                mode_nmi=modes["nmi"], reconstruction_mse=art.ae.reconstruction_error(art.test[0]))


def detectors(settings: MNISTSettings, art: MNISTArtifacts, det, samples: dict) -> dict:
    """How well each generator's own detector picks out the samples that decode mixed (at τ = ``tau``).

    OT: the singular-set score of the source point (:meth:`~otgen.singular.SingularSetDetector.score`) and
    its flag; diffusion: the trajectory variance of the predicted x̂0 (Aithal et al., NeurIPS 2024).
    """
    out = {}
    for key, r in samples.items():
        info = r["info"]
        if "source" in info:
            score_, flags = det.score(np.asarray(info["source"])), np.asarray(info["near_singular"], bool)
        elif "x0_variance" in info:
            score_, flags = np.asarray(info["x0_variance"]), None
        else:
            continue
        mixed = (r["outputs"][0] >= settings.tau).sum(1) >= 2                  # probabilities (n, 10)
        out[key] = dict(kind="singular set" if flags is not None else "x0 trajectory variance",
                        n_mixed=int(mixed.sum()), auc=roc_auc(score_, mixed) if 0 < mixed.sum() < len(mixed) else None)
        if flags is not None:
            out[key].update(flagged=int(flags.sum()), precision=float(mixed[flags].mean()) if flags.any() else None,
                            recall=float(flags[mixed].mean()) if mixed.any() else None)
    return out


def _stage_seconds(model) -> dict | None:
    """Seconds of each stage of a latent model's fit (``SeparatedLatent``: encoder, embedding, ...), else None."""
    stages = getattr(model, "history_", {}).get("time")
    return {k: float(v) for k, v in stages.items()} if isinstance(stages, dict) else None


def _summary(settings, art, det, rows, geometry, found, seconds) -> dict:
    """The contents of metrics.json (the schema is in :func:`run`)."""
    s, ot, hist = settings, art.ot, art.ot.history_
    return {
        "settings": dict(asdict(s), taus=list(s.taus), n_train_used=len(art.train[0]), n_test=len(art.test[0])),
        "latent": geometry,
        "generators": {k: rows[k] for k in GENERATORS},
        "floors": {k: rows[k] for k in FLOORS},
        "detectors": found,
        "classifier_test_accuracy": art.clf.score(*art.test),
        "ot": dict(fit_seconds=art.cache.seconds["ot"], n_iter=int(ot.n_iter_), converged=bool(ot.converged_),
                   tv_error=float(hist[-1]["tv"]) if hist else None, n_targets=int(ot.targets_.shape[0]),
                   n_components=int(det.n_components_), threshold=float(det.threshold_),
                   n_singular_pairs=int(len(det.singular_pairs_)), n_pairs=int(len(det.pairs_)),
                   angle_median=float(np.median(det.angles_)) if len(det.angles_) else None,
                   angle_max=float(det.angles_.max()) if len(det.angles_) else None,
                   angle_rule=s.detector_rule(), blend_rule=s.blend_rule),
        "diffusion": dict(fit_seconds=art.cache.seconds["diffusion"], loss=loss_plateau(art.diffusion.history_["loss"])),
        "timings": dict(fit_seconds=dict(art.cache.seconds), latent_stages=_stage_seconds(art.ae), total=seconds),
        "environment": dict(device=str(ot.targets_.device), torch_threads=torch.get_num_threads(),
                            gemm_gflops=host_gflops()),
        "cache_hits": dict(art.cache.hits),
        "all_cached": all(art.cache.hits.values()),
    }


def run(settings: MNISTSettings, out_dir, *, cache_dir=None, device=None, verbose: bool = False) -> MNISTRun:
    """fit -> generators -> sample -> score -> ``metrics.json`` and ``report.md`` in ``out_dir``.

    ``cache_dir=None`` caches fitted models in ``<out_dir>/cache``. The schema of metrics.json:

    - ``settings``: every :class:`MNISTSettings` field, ``n_train_used``, ``n_test``;
    - ``latent``: ``name``, ``dim``, ``knn_agreement`` (10-NN label agreement of held-out codes),
      ``angle_auc`` / ``angle_gap`` / ``angle_gap_ratio`` / ``angle_within_median`` / ``angle_between_median``
      (facet angles between cells of different digits vs the same digit), ``n_modes`` (detector components
      with >= 1 % of the mass), ``n_components``, ``mode_ari``, ``mode_nmi``, ``reconstruction_mse``;
    - ``generators.KEY`` for KEY in ``ot_extended, ot_plain, ddpm, ddim, dpm_solver, gaussian`` and ``floors.KEY`` for
      ``real, reconstruction, real_heldout, reconstruction_heldout, noise``: ``mixed_rate`` {"0.1", ...}, ``mixed_rate_se``, ``excess_mixed_rate``,
      ``excess_mixed_rate_se``, ``between_modes_rate``, ``between_modes_se``, ``off_support_rate``, ``copies``,
      ``fid``, ``precision``, ``recall``, ``density``, ``coverage``, ``low_confidence``, ``class_kl``,
      ``class_histogram``, ``sw_latent``, ``samples_per_s`` (None for floors), ``near_singular_fraction`` (OT);
    - ``detectors.KEY``: how the generator's own detector picks out mixed samples (``auc``; OT also
      ``precision``, ``recall``, ``flagged``);
    - ``classifier_test_accuracy``, ``ot`` (solve and detector), ``diffusion`` (loss plateau), ``timings``
      (``fit_seconds`` per model, ``latent_stages``: the latent model's own stages where it records them, ``total``),
      ``environment`` (device, torch threads, ``gemm_gflops``: the host's float32 GEMM rate at the end of the
      run, to compare run times across hosts and hours), ``cache_hits``, ``all_cached``.
    """
    t0 = time.perf_counter()
    out_dir = check_out_dir(out_dir)
    cache = Cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir)
    art = fit(settings, cache, device=device, verbose=verbose)
    det, gens = make_generators(settings, art)
    samples = sample(settings, art, gens, verbose=verbose)
    rows, geometry = score(settings, art, samples), latent_geometry(settings, art, det, gens)
    metrics = _summary(settings, art, det, rows, geometry, detectors(settings, art, det, samples),
                       time.perf_counter() - t0)
    paths = dict(metrics=write_json(os.path.join(out_dir, "metrics.json"), metrics),
                 report=write_text(os.path.join(out_dir, "report.md"), report(metrics)))
    return MNISTRun(settings, art, det, samples, metrics, paths)


# ----------------------------------------------------------------------------- report

_COLUMNS = [("between modes", "between_modes_rate", 3), ("off support", "off_support_rate", 3),
            ("copies", "copies", 3), ("FID", "fid", 2), ("precision", "precision", 3), ("recall", "recall", 3),
            ("density", "density", 3), ("coverage", "coverage", 3), ("low conf", "low_confidence", 3),
            ("samples/s", "samples_per_s", 0)]


def _table(rows: dict, taus, tau) -> str:
    t = str(float(tau))
    head = (["generator"] + [f"mixed τ={x}" for x in taus] + [f"excess over AE floor (τ={tau})"] +
            [c for c, _, _ in _COLUMNS])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in rows.items():
        cells = [NAMES[key]] + [f"{fmt(r['mixed_rate'][str(float(x))])} ± {fmt(r['mixed_rate_se'][str(float(x))])}"
                                for x in taus]
        cells.append(f"{r['excess_mixed_rate'][t]:+.3f} ± {fmt(r['excess_mixed_rate_se'][t])}")
        cells += [fmt(r.get(key_), nd) for _, key_, nd in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(a: float, b: float, se: float) -> str:
    return "below" if a + 2 * se < b else "above" if a - 2 * se > b else "not distinguishable from"


def _answer(m) -> list:
    """OT against DDPM on mixing: decoded (classifier) and in the latent (between modes), with standard errors."""
    s, g = m["settings"], m["generators"]
    t, n, lat = str(float(s["tau"])), s["n_samples"], m["latent"]
    a, b = g["ot_extended"]["mixed_rate"][t], g["ddpm"]["mixed_rate"][t]
    c, d = g["ot_extended"]["between_modes_rate"], g["ddpm"]["between_modes_rate"]
    separated = "separated" if lat["knn_agreement"] >= SEPARATED_AGREEMENT else "touching"
    return [f"- **Does OT mix modes less than diffusion in this latent?** The digits' modes here are {separated} "
            f"(10-NN label agreement {lat['knn_agreement']:.3f}; ≥ {SEPARATED_AGREEMENT} counts as separated). "
            f"Decoded mixed rate at τ = {s['tau']}: OT (extended) − DDPM = {a - b:+.3f} ± {difference_se(a, b, n):.3f}: "
            f"OT is {_verdict(a, b, difference_se(a, b, n))} DDPM (two standard errors). Between-modes rate in the "
            f"latent: {c - d:+.3f} ± {difference_se(c, d, n):.3f} ({_verdict(c, d, difference_se(c, d, n))}). "
            + "Against the other samplers: " + ", ".join(
                f"{NAMES[k]} {a - g[k]['mixed_rate'][t]:+.3f} ± {difference_se(a, g[k]['mixed_rate'][t], n):.3f}"
                for k in DIFFUSION_ROWS if k in g and k != "ddpm") + ".",
            f"- The decoder's floor: AE reconstructions {fmt(m['floors']['reconstruction']['mixed_rate'][t])}, real digits "
            f"{fmt(m['floors']['real']['mixed_rate'][t])} (training digits: the classifier has seen them); on held-out "
            f"digits, which neither the classifier nor the autoencoder has seen: real "
            f"{fmt(m['floors']['real_heldout']['mixed_rate'][t])} ± {fmt(m['floors']['real_heldout']['mixed_rate_se'][t])}, "
            f"reconstructions {fmt(m['floors']['reconstruction_heldout']['mixed_rate'][t])} ± "
            f"{fmt(m['floors']['reconstruction_heldout']['mixed_rate_se'][t])}. OT (plain) returns training codes (copies "
            f"{fmt(g['ot_plain']['copies'])}), so it sits at the reconstruction floor by construction."]


def _geometry_lines(m) -> list:
    lat, o = m["latent"], m["ot"]
    lines = [f"- Latent `{lat['name']}` ({lat['dim']}-D): 10-NN label agreement {lat['knn_agreement']:.3f}; facet angles "
             f"between cells of different digits vs the same digit: AUC {fmt(lat['angle_auc'])}, medians "
             f"{fmt(lat['angle_between_median'])} vs {fmt(lat['angle_within_median'])} rad, gap in the sorted angles: "
             f"{'yes' if lat['angle_gap'] else 'no'} (largest / median {fmt(lat['angle_gap_ratio'], 2)}).",
             f"- Detector ({o['angle_rule']} rule): {o['n_components']} component(s), {lat['n_modes']} with ≥ 1 % of the "
             f"mass; against the digits ARI {fmt(lat['mode_ari'])}, NMI {fmt(lat['mode_nmi'])}; threshold "
             f"{fmt(o['threshold'])} rad, {o['n_singular_pairs']} singular of {o['n_pairs']} adjacent pairs."]
    for key, r in m["detectors"].items():
        extra = "" if "precision" not in r else (f", {r['flagged']} flagged, precision {fmt(r['precision'])}, "
                                                  f"recall {fmt(r['recall'])}")
        lines.append(f"- {NAMES[key]}: its {r['kind']} picks out the {r['n_mixed']} mixed samples with AUC "
                     f"{fmt(r['auc'])}{extra}.")
    return lines


def report(metrics: dict) -> str:
    """report.md: the table and what it says, from measured values only."""
    m, s = metrics, metrics["settings"]
    rows, o = {**m["generators"], **m["floors"]}, m["ot"]
    lines = [
        "# MNIST: semi-discrete OT vs latent diffusion\n",
        f"Latent `{s['latent']}`; {s['n_samples']} samples per generator; metrics against {s['n_test']} held-out "
        f"test digits (k = {s['k']}). Mixed = two classes with probability ≥ τ, ± its binomial standard error; "
        f"excess = mixed minus the AE-reconstruction floor's; between modes = no digit holds {MAJORITY:.0%} of a "
        f"code's {NEIGHBOURS} nearest training codes; off support = farther from the training codes than 99 % of "
        "their own nearest-neighbour distances; copies = on a training code; samples/s = latent sampling of one "
        "batch (decoding excluded).\n",
        _table(rows, s["taus"], s["tau"]) + "\n"] + _answer(m) + _geometry_lines(m) + [
        f"- Diffusion loss: last 10 % of steps {m['diffusion']['loss']['last_10pct']:.4f}, previous 10 % "
        f"{m['diffusion']['loss']['previous_10pct']:.4f} (relative change "
        f"{m['diffusion']['loss']['relative_change']:+.3%}; the curve is in mnist_diffusion_loss.png).",
        f"- Classifier test accuracy {m['classifier_test_accuracy']:.4f}; latent reconstruction MSE "
        f"{m['latent']['reconstruction_mse']:.4f}; OT {o['n_iter']} iterations, converged {o['converged']}, TV "
        f"{fmt(o['tv_error'], 4)}; total {m['timings']['total']:.0f} s "
        f"({'all models cached' if m['all_cached'] else 'models fitted'}) on a host doing "
        f"{m['environment']['gemm_gflops']:.0f} GFLOP/s (float32 GEMM, {m['environment']['torch_threads']} threads).",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the 2-D figure's points

def _between_modes(z, z_train, cell_component, k: int = 3) -> np.ndarray:
    """Latent points whose k nearest training codes lie in two or more detector modes -> (m,) bool."""
    d = torch.cdist(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(z_train, dtype=torch.float32))
    comp = np.asarray(cell_component)[d.topk(k, dim=1, largest=False).indices.numpy()]
    return (comp != comp[:, :1]).any(1)


def mode_mixture_points(settings: MNISTSettings, art: MNISTArtifacts, generators: dict, *, n_points: int = 100,
                        method: str = "ddpm") -> dict:
    """The points of the seeds' Fig. 3: OT extended and one diffusion sampler, decoded and classified.

    Returns ``{"ot": panel, "diffusion": panel}``, a panel being ``z`` (standardised codes (m, d)),
    ``flagged`` (OT: source points near the singular set; diffusion, which has no source point:
    codes whose 3 nearest training codes lie in two or more detector modes), ``images``, ``probs``
    (classifier), ``title``.
    """
    ot_gen = generators["ot_extended"]
    dm_gen = generators[method]
    codes, info = ot_gen.sample(n_points, seed=spawn_seed(settings.seed, "figure", "ot"), return_info=True)
    comp = ot_gen.detector_.cell_component_[ot_gen.target_index_]        # mode of each training code
    y_dm = dm_gen.sample(n_points, seed=spawn_seed(settings.seed, "figure", "diffusion"))
    z_dm = art.latent.transform(y_dm)
    panels = {"ot": (codes, np.asarray(info["near_singular"], bool), "OT (extended) + singular-set detector"),
              "diffusion": (y_dm, _between_modes(z_dm, art.z, comp), f"diffusion ({method.upper()})")}
    out = {}
    for key, (c, flagged, title) in panels.items():
        images = art.ae.decode(c)
        out[key] = dict(z=art.latent.transform(c), flagged=flagged, images=images,
                        probs=art.clf.predict_proba(images), title=title)
    return out
