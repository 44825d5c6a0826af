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
   generator in this latent can do) and uniform pixel noise; everything decoded.
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

import numpy as np
import torch
from tqdm.auto import tqdm

from otgen._base import spawn_seed
from otgen._validation import resolve_device
from otgen.autoencoder import ImageAutoencoder
from otgen.data.mnist import load_mnist
from otgen.diffusion import LatentDiffusion
from otgen.experiments._cache import Cache
from otgen.experiments._common import (binomial_se, check_out_dir, check_settings_fields, difference_se, fmt,
                                       latent_scores, timed_sample, write_json, write_text)
from otgen.generate import DiffusionGenerator, GaussianCodeGenerator, OTGenerator
from otgen.latent import LatentSpace
from otgen.metrics import MNISTClassifier, digit_metrics, loss_plateau, nn_median
from otgen.singular import SingularSetDetector
from otgen.transport import SemiDiscreteOT

__all__ = ["MNISTSettings", "MNISTArtifacts", "MNISTRun", "fit", "make_generators", "sample", "score", "report",
           "run", "mode_mixture_points", "GENERATORS", "FLOORS"]

GENERATORS = ("OT (extended)", "OT (plain)", "DDPM", "DDIM", "Gaussian")
FLOORS = ("real digits", "AE reconstructions", "uniform noise")
COPY_RADIUS = 0.01           # a sample within this fraction of the median NN distance of a training code copies it
MIN_TRAIN = 10               # a subset smaller than this cannot hold the ten digits


def _check_taus(taus, name):
    if not isinstance(taus, tuple) or not taus or any(isinstance(t, bool) or not isinstance(t, (int, float))
                                                      or not 0 < t <= 1 for t in taus):
        raise ValueError(f"{name} must be a non-empty tuple of numbers in (0, 1], got {taus!r}")


@dataclass(frozen=True)
class MNISTSettings:
    """Every setting of the MNIST comparison, with its default and why (where it was measured)."""

    latent_dim: int = field(default=8, metadata=dict(check="int", help="autoencoder code dimension"))
    ae_epochs: int = field(default=20, metadata=dict(
        check="int", help="autoencoder epochs (held-out MSE 0.019 at 20 on the embedded digits)"))
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
    n_samples: int = field(default=1000, metadata=dict(
        check="int", help="samples per generator and per floor (a rate's standard error is ~0.007 at 1000)"))
    ddpm_steps: int = field(default=1000, metadata=dict(check="int", help="DDPM sampling steps"))
    ddim_steps: int = field(default=50, metadata=dict(check="int", help="DDIM sampling steps"))
    k: int = field(default=5, metadata=dict(check="int", help="neighbours of the k-NN metrics"))
    taus: tuple = field(default=(0.1, 0.2, 0.3, 0.4), metadata=dict(
        check=_check_taus, help="mode-mixture thresholds: a digit is mixed when two classes have probability >= tau"))
    tau: float = field(default=0.2, metadata=dict(check="float", help="the threshold of the headline and figures"))
    angle_quantile: float | None = field(default=None, metadata=dict(
        check="fraction", optional=True, help="detector threshold at this quantile of the neighbour angles "
        "(default: the gap rule; a hyper-parameter: the MNIST angles show no gap)"))
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

    def ae_key(self) -> dict:
        """What determines the autoencoder (and every model fitted on its codes)."""
        return dict(data_dir=None if self.data_dir is None else os.path.abspath(self.data_dir),
                    n_train=self.n_train, seed=self.seed, latent_dim=self.latent_dim, ae_epochs=self.ae_epochs)


@dataclass
class MNISTArtifacts:
    """The fitted models and data of :func:`fit` (codes raw (n, d); ``z`` standardised)."""

    train: tuple
    test: tuple
    ae: ImageAutoencoder
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
    ae = cache.get_or_fit("autoencoder", s.ae_key(), lambda: ImageAutoencoder(
        latent_dim=s.latent_dim, epochs=s.ae_epochs, device=dev, seed=s.seed, verbose=verbose).fit(train[0]),
        ImageAutoencoder, dev)
    clf_key = dict(s.ae_key(), latent_dim=None, ae_epochs=None, clf_epochs=s.clf_epochs)
    clf = cache.get_or_fit("classifier", clf_key, lambda: MNISTClassifier(
        epochs=s.clf_epochs, device=dev, seed=s.seed, verbose=verbose).fit(*train), MNISTClassifier, dev)
    codes = np.asarray(ae.encode(train[0]), np.float32)                         # (n, d)
    latent = LatentSpace().fit(codes)
    # 2-D latents (the figure): exact power diagrams; near-duplicate 2-D codes stall the sampled Hessian
    method = "exact2d" if s.latent_dim == 2 else "stochastic"
    ot_key = dict(s.ae_key(), tol=s.ot_tol, max_iter=s.ot_max_iter, method=method)
    ot = cache.get_or_fit("ot", ot_key, lambda: OTGenerator(latent=latent, ot=SemiDiscreteOT(
        tol=s.ot_tol, max_iter=s.ot_max_iter, method=method, device=dev, seed=s.seed, verbose=verbose)
    ).fit(codes).ot_, SemiDiscreteOT, dev)
    dm = cache.get_or_fit("diffusion", dict(s.ae_key(), n_steps=s.diffusion_steps), lambda: LatentDiffusion(
        latent=latent, n_steps=s.diffusion_steps, device=dev, seed=s.seed, verbose=verbose).fit(codes),
        LatentDiffusion, dev)
    return MNISTArtifacts(train, test, ae, clf, latent, ot, dm, codes, latent.transform(codes), cache)


def make_generators(settings: MNISTSettings, art: MNISTArtifacts):
    """The detector of the OT map and the five generators, fitted on the training codes."""
    s = settings
    rule = dict(angle_threshold=None) if s.angle_quantile is None else \
        dict(angle_threshold="quantile", quantile=s.angle_quantile)
    det = SingularSetDetector(seed=spawn_seed(s.seed, "detector"), **rule).fit(art.ot)
    ot = dict(latent=art.latent, ot=art.ot, detector=det, blend_rule=s.blend_rule, seed=s.seed)
    gens = {"OT (extended)": OTGenerator(extension="piecewise-linear", **ot),
            "OT (plain)": OTGenerator(extension="none", **ot),
            "DDPM": DiffusionGenerator(art.diffusion, art.latent, method="ddpm", num_inference_steps=s.ddpm_steps),
            "DDIM": DiffusionGenerator(art.diffusion, art.latent, method="ddim", num_inference_steps=s.ddim_steps),
            "Gaussian": GaussianCodeGenerator(art.latent, seed=s.seed)}
    return det, {name: g.fit(art.codes) for name, g in gens.items()}


def sample(settings: MNISTSettings, art: MNISTArtifacts, generators: dict, *, verbose: bool = False) -> dict:
    """``n_samples`` codes of every generator and floor: name -> dict(codes, z, images, info, seconds)."""
    s, out = settings, {}
    for name, gen in tqdm(generators.items(), desc="sampling", disable=not verbose, leave=False):
        codes, info, secs = timed_sample(gen, s.n_samples, spawn_seed(s.seed, "sample", name))
        out[name] = dict(codes=codes, info=info, seconds=secs)
    rng = np.random.default_rng(spawn_seed(s.seed, "floors"))
    idx = rng.choice(len(art.codes), size=min(s.n_samples, len(art.codes)), replace=False)
    x_real = art.train[0][idx]
    noise = rng.random((s.n_samples, 28, 28), dtype=np.float32)
    floors = {"real digits": (x_real, art.codes[idx]), "AE reconstructions": (art.ae.reconstruct(x_real), art.codes[idx]),
              "uniform noise": (noise, np.asarray(art.ae.encode(noise), np.float32))}
    for name, (images, codes) in floors.items():
        out[name] = dict(codes=codes, images=images, info={}, seconds=None)
    for r in out.values():
        r["z"] = art.latent.transform(r["codes"])
        if "images" not in r:
            r["images"] = art.ae.decode(r["codes"])
    return out


def score(settings: MNISTSettings, art: MNISTArtifacts, samples: dict) -> dict:
    """Every metric of every row (generators and floors): name -> metrics dict."""
    s = settings
    z_test = art.latent.transform(np.asarray(art.ae.encode(art.test[0]), np.float32))
    radius = COPY_RADIUS * nn_median(art.z)
    rows = {}
    for name, r in samples.items():
        m = digit_metrics(art.clf, r["images"], art.test[0], k=s.k, taus=s.taus, device="cpu")
        m["mode_mixture_se"] = {t: binomial_se(v, len(r["z"])) for t, v in m["mode_mixture"].items()}
        m.update(latent_scores(r, z_test, art.z, radius, s.seed))
        rows[name] = m
    return rows


def _summary(settings, art, det, rows, seconds) -> dict:
    """The contents of metrics.json (see docs of :func:`run`)."""
    s, ot, hist = settings, art.ot, art.ot.history_
    return {
        "settings": dict(asdict(s), taus=list(s.taus), n_train_used=len(art.train[0]), n_test=len(art.test[0])),
        "rows": rows,
        "classifier_test_accuracy": art.clf.score(*art.test),
        "ae_test_mse": art.ae.reconstruction_error(art.test[0]),
        "ot": dict(fit_seconds=art.cache.seconds["ot"], n_iter=int(ot.n_iter_), converged=bool(ot.converged_),
                   tv_error=float(hist[-1]["tv"]) if hist else None, n_targets=int(ot.targets_.shape[0]),
                   n_components=int(det.n_components_), threshold=float(det.threshold_),
                   n_singular_pairs=int(len(det.singular_pairs_)), n_pairs=int(len(det.pairs_)),
                   angle_median=float(np.median(det.angles_)) if len(det.angles_) else None,
                   angle_max=float(det.angles_.max()) if len(det.angles_) else None,
                   angle_rule="gap" if s.angle_quantile is None else f"quantile {s.angle_quantile:g}",
                   blend_rule=s.blend_rule),
        "diffusion": dict(fit_seconds=art.cache.seconds["diffusion"], loss=loss_plateau(art.diffusion.history_["loss"])),
        "timings": dict(fit_seconds=dict(art.cache.seconds), total=seconds),
        "environment": dict(device=str(ot.targets_.device), torch_threads=torch.get_num_threads()),
        "cache_hits": dict(art.cache.hits),
        "all_cached": all(art.cache.hits.values()),
    }


def run(settings: MNISTSettings, out_dir, *, cache_dir=None, device=None, verbose: bool = False) -> MNISTRun:
    """fit -> generators -> sample -> score -> ``metrics.json`` and ``report.md`` in ``out_dir``.

    ``cache_dir=None`` caches fitted models in ``<out_dir>/cache``. The schema of metrics.json:
    ``settings``, ``rows`` {generator or floor: metrics}, ``classifier_test_accuracy``, ``ae_test_mse``,
    ``ot`` (solve and detector), ``diffusion`` (loss plateau), ``timings``, ``environment``,
    ``cache_hits``, ``all_cached``.
    """
    t0 = time.perf_counter()
    out_dir = check_out_dir(out_dir)
    cache = Cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir)
    art = fit(settings, cache, device=device, verbose=verbose)
    det, gens = make_generators(settings, art)
    samples = sample(settings, art, gens, verbose=verbose)
    metrics = _summary(settings, art, det, score(settings, art, samples), time.perf_counter() - t0)
    paths = dict(metrics=write_json(os.path.join(out_dir, "metrics.json"), metrics),
                 report=write_text(os.path.join(out_dir, "report.md"), report(metrics)))
    return MNISTRun(settings, art, det, samples, metrics, paths)


# ----------------------------------------------------------------------------- report

_COLUMNS = [("low conf", "low_confidence", 3), ("class KL", "class_kl", 3), ("FID", "fid", 2),
            ("precision", "precision", 3), ("recall", "recall", 3), ("density", "density", 3),
            ("coverage", "coverage", 3), ("SW latent", "sw_latent", 3), ("copies", "copy_rate", 3),
            ("samples/s", "samples_per_s", 0)]


def _table(rows: dict, taus) -> str:
    head = ["generator"] + [f"MMR τ={t}" for t in taus] + [c for c, _, _ in _COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name] + [f"{fmt(r['mode_mixture'][str(float(t))])} ± {fmt(r['mode_mixture_se'][str(float(t))])}"
                          for t in taus]
        cells += [fmt(r.get(key), nd) for _, key, nd in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(metrics: dict) -> str:
    """report.md: the table and what it says, from measured values only."""
    m, s = metrics, metrics["settings"]
    rows, t, n, o = m["rows"], str(float(s["tau"])), s["n_samples"], m["ot"]
    a, b = rows["OT (extended)"]["mode_mixture"][t], rows["DDPM"]["mode_mixture"][t]
    se = difference_se(a, b, n)
    verdict = "below" if a + 2 * se < b else "above" if a - 2 * se > b else "not distinguishable from"
    mmr = ", ".join(f"{name} {fmt(r['mode_mixture'][t])}" for name, r in rows.items())
    lines = [
        "# MNIST: semi-discrete OT vs latent diffusion\n",
        f"{n} samples per generator, latent dim {s['latent_dim']}, metrics against {s['n_test']} held-out test "
        f"digits (k = {s['k']}). MMR = mode-mixture rate (two classes with probability ≥ τ) ± its binomial standard "
        "error; SW latent in standardised codes; copies = fraction of samples on a training code; samples/s = "
        "latent sampling of one batch (decoding excluded).\n",
        _table(rows, s["taus"]) + "\n",
        f"- Mode mixture at τ = {t}: {mmr}.",
        f"- OT (extended) − DDPM = {a - b:+.3f}, standard error of the difference {se:.3f}: OT's rate is {verdict} "
        "DDPM's (two standard errors).",
        f"- OT (plain) copies training codes at rate {fmt(rows['OT (plain)']['copy_rate'])}; OT (extended) at "
        f"{fmt(rows['OT (extended)']['copy_rate'])}, with {fmt(rows['OT (extended)'].get('near_singular_fraction'))} of its "
        "source points near the singular set (mapped to their own cell's target).",
        f"- Detector: {o['n_components']} mode(s) among {o['n_targets']} cells, threshold {fmt(o['threshold'])} rad "
        f"(rule {o['angle_rule']}, blend rule {o['blend_rule']}); {o['n_singular_pairs']} singular of {o['n_pairs']} "
        f"adjacent pairs; neighbour angles median {fmt(o['angle_median'])}, max {fmt(o['angle_max'])} rad.",
        f"- Diffusion loss: last 10 % of steps {m['diffusion']['loss']['last_10pct']:.4f}, previous 10 % "
        f"{m['diffusion']['loss']['previous_10pct']:.4f} (relative change "
        f"{m['diffusion']['loss']['relative_change']:+.3%}).",
        f"- Classifier test accuracy {m['classifier_test_accuracy']:.4f}; AE test MSE {m['ae_test_mse']:.4f}; OT "
        f"{o['n_iter']} iterations, converged {o['converged']}, TV {fmt(o['tv_error'], 4)}; total "
        f"{m['timings']['total']:.0f} s ({'all models cached' if m['all_cached'] else 'models fitted'}).",
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
    ot_gen = generators["OT (extended)"]
    dm_gen = generators["DDPM" if method == "ddpm" else "DDIM"]
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
