"""The 2-D experiments behind the toy figures: each a frozen settings dataclass and one ``run_*`` stage.

Every ``run_*(settings)`` fits what its figure shows and measures the numbers the figure
reports; it draws nothing (the drawing is in :mod:`otgen.figures`). Results are frozen
dataclasses of fitted objects, arrays in the data's space and a ``scores`` dict of plain
numbers (the JSON beside each figure).

- :func:`run_singular_set`: the singular set of the exact OT map from the uniform disc to a
  uniform crescent (the seeds' Fig. 4) [1]_ [2]_.
- :func:`run_mode_mixture_2d`: semi-discrete OT with the singular-set detector against a
  diffusion model on separated Gaussian modes; off-support rates [3]_ [4]_.
- :func:`run_detector_pr`: precision and recall of the singular-set detector on two blobs.

Random streams are spawned from the one ``seed`` of the settings
(:func:`otgen._base.spawn_seed`), one name per draw.

References
----------
.. [1] A. Figalli, "Regularity properties of optimal maps between nonconvex domains in the plane",
   Comm. PDE 35 (2010).
.. [2] X. Gu, "A geometric explanation of Sora's physical paradoxes" (the seeds), Fig. 4.
.. [3] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [4] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from otgen._base import spawn_seed
from otgen.data import crescent, gaussian_grid, gaussian_ring, two_blobs
from otgen.diffusion import LatentDiffusion
from otgen.experiments._common import check_settings_fields
from otgen.generate import DiffusionGenerator, OTGenerator
from otgen.latent import LatentSpace
from otgen.metrics.latent import off_support_rate
from otgen.singular import SingularSetDetector, normal_angles, ratio_threshold
from otgen.transport import (SOURCES, Power2DResult, SemiDiscreteOT, disc_domain, power_cells, power_facets,
                             sample_source, solve_power2d)

__all__ = ["SingularSetSettings", "SingularSetResults", "run_singular_set", "ModeMixture2DSettings",
           "ModeMixture2DResults", "run_mode_mixture_2d", "DetectorPRSettings", "DetectorPRResults",
           "run_detector_pr", "TOY_DATASETS"]

DEVICE = "cpu"               # a few thousand 2-D points: the toys run on the CPU, as before the move
TOY_DATASETS = {"ring": gaussian_ring, "grid": gaussian_grid}    # 8 modes on a circle | 5 x 5 grid


# ----------------------------------------------------------------------------- singular set (Fig. 4)

@dataclass(frozen=True)
class SingularSetSettings:
    """Settings of :func:`run_singular_set` (uniform disc -> uniform crescent, exact 2-D solve).

    Parameters
    ----------
    n_targets : int, default 1500
        Uniform samples of :func:`~otgen.data.crescent`, equal masses.
    n_vertices : int, default 256
        The disc as a regular polygon (:func:`~otgen.transport.disc_domain`).
    min_ratio : float, default 5.0
        Singular facets: angle > ``min_ratio`` x median angle (:func:`~otgen.singular.ratio_threshold`).
    tol : float, default 1e-8
        Total-variation tolerance of :func:`~otgen.transport.solve_power2d`.
    seed : int, default 0
        Seeds the crescent samples (the only random draw).
    """

    # cells fine enough that the singular facets trace a curve, as in the seeds' Fig. 4
    n_targets: int = field(default=1500, metadata={"check": "int", "minimum": 3, "help": "uniform samples of the crescent (equal masses)"})
    # a 256-gon's area is within 0.01 % of the disc's
    n_vertices: int = field(default=256, metadata={"check": "int", "minimum": 3, "help": "the disc as a regular polygon of this many vertices"})
    # connected target, so no gap in the angles: the detector's ratio rule at its default
    min_ratio: float = field(default=5.0, metadata={"check": "float", "help": "singular facets: angle above this multiple of the median angle"})
    # Newton converges quadratically: measured 8 iterations at 1e-8 against 6 at 1e-4
    tol: float = field(default=1e-8, metadata={"check": "float", "help": "total-variation tolerance of the exact 2-D solve"})
    seed: int = field(default=0, metadata={"check": "seed"})

    def __post_init__(self):
        check_settings_fields(self)


@dataclass(frozen=True, eq=False)
class SingularSetResults:
    """What :func:`run_singular_set` fitted and measured.

    Attributes
    ----------
    settings : SingularSetSettings
    solve : Power2DResult
        The exact solve (``heights``, ``error``, ``n_iter``, ...).
    targets : ndarray (N, 2)
    domain : ndarray (V, 2)
        The disc polygon.
    cells : list of ndarray (m_i, 2) or None
        Power cells clipped to the disc.
    pairs : ndarray of int64 (F, 2)
        Adjacent cells; ``segments`` (F, 2, 2) their shared facets, ``lengths`` (F,).
    angles : ndarray (F,)
        Angles between the supporting planes of the two cells (:func:`~otgen.singular.normal_angles`).
    threshold : float
    singular : ndarray of bool (F,)
        ``angles > threshold``.
    scores : dict
        ``threshold``, ``n_singular_facets``, ``singular_length``, ``n_facets``, ``n_targets``,
        ``tv_error``, ``n_iter``, ``median_angle``, ``max_angle``.
    """

    settings: SingularSetSettings
    solve: Power2DResult
    targets: np.ndarray
    domain: np.ndarray
    cells: list
    pairs: np.ndarray
    segments: np.ndarray
    lengths: np.ndarray
    angles: np.ndarray
    threshold: float
    singular: np.ndarray
    scores: dict


def run_singular_set(settings: SingularSetSettings = SingularSetSettings()) -> SingularSetResults:
    """Solve the disc -> crescent transport exactly and find its singular facets.

    The heights come from :func:`~otgen.transport.solve_power2d` (exact power diagram), the
    facets from :func:`~otgen.transport.power_facets`. A facet is singular when the angle between
    the supporting planes of its two cells exceeds :math:`\\tau = r\\,\\mathrm{med}(\\theta)`
    (``r = min_ratio``): the crescent is connected, so the jump of the map grows continuously
    from 0 at the end of the singular curve and the angles have no gap [1]_.

    Parameters
    ----------
    settings : SingularSetSettings

    Returns
    -------
    SingularSetResults
    """
    s = settings
    Y = crescent(s.n_targets, seed=s.seed)                                  # (N, 2)
    D = disc_domain(1.0, s.n_vertices)                                      # (V, 2)
    solve = solve_power2d(Y, domain=D, tol=s.tol)
    pairs, segments, lengths = power_facets(Y, solve.heights, D)
    angles = normal_angles(Y, pairs)
    threshold = ratio_threshold(angles, s.min_ratio)
    singular = angles > threshold
    scores = dict(threshold=threshold, n_singular_facets=int(singular.sum()),
                  singular_length=float(lengths[singular].sum()), n_facets=int(len(pairs)), n_targets=s.n_targets,
                  tv_error=float(solve.error), n_iter=int(solve.n_iter), median_angle=float(np.median(angles)),
                  max_angle=float(angles.max()))
    return SingularSetResults(settings=s, solve=solve, targets=Y, domain=D, cells=power_cells(Y, solve.heights, D),
                              pairs=pairs, segments=segments, lengths=lengths, angles=angles, threshold=threshold,
                              singular=singular, scores=scores)


# ----------------------------------------------------------------------------- mode mixture in 2-D

@dataclass(frozen=True)
class ModeMixture2DSettings:
    """Settings of :func:`run_mode_mixture_2d` (OT + detector against DDPM on a Gaussian mixture).

    Parameters
    ----------
    dataset : {"ring", "grid"}, default "ring"
        :func:`~otgen.data.gaussian_ring` (8 modes) or :func:`~otgen.data.gaussian_grid` (5 x 5).
    n_data : int, default 1000
    n_samples : int, default 2000
        Points drawn by each generator.
    seed : int, default 0
    ot_tol : float, default 0.05
        Total-variation tolerance of :class:`~otgen.transport.SemiDiscreteOT`.
    k : int, default 3
        Top-k cells of the detector and of the piecewise-linear extension.
    diffusion_steps : int, default 10000
        Training steps of the :class:`~otgen.diffusion.LatentDiffusion` baseline.
    diffusion_hidden, diffusion_depth : int, default 128, 3
        Its MLP denoiser.
    diffusion_method : {"ddpm", "ddim"}, default "ddpm"
    num_inference_steps : int or None, default None
        ``None``: the sampler's default (1000 DDPM, 50 DDIM).
    diffusion_kwargs : tuple of (str, value) pairs, default ()
        Further :class:`~otgen.diffusion.LatentDiffusion` settings, e.g. ``(("lr", 1e-3),)``.
    """

    dataset: str = field(default="ring", metadata={"check": tuple(TOY_DATASETS), "help": "ring (8 Gaussians) or grid (5 x 5 Gaussians)"})
    # 125 (ring) / 40 (grid) points a mode
    n_data: int = field(default=1000, metadata={"check": "int", "minimum": 2, "help": "data points (OT targets, diffusion training set)"})
    # off-support rates to a binomial standard error of at most 0.011
    n_samples: int = field(default=2000, metadata={"check": "int", "help": "points drawn by each generator"})
    seed: int = field(default=0, metadata={"check": "seed"})
    # loose, as before the move: the detector uses the cells' adjacency, not their exact masses
    ot_tol: float = field(default=0.05, metadata={"check": "float", "help": "total-variation tolerance of the OT solve"})
    k: int = field(default=3, metadata={"check": "int", "minimum": 2, "help": "top-k cells of the detector and the extension"})  # the detector's default top-k
    diffusion_steps: int = field(default=10000, metadata={"check": "int", "help": "training steps of the DDPM baseline"})  # LatentDiffusion's default training length
    diffusion_hidden: int = field(default=128, metadata={"check": "int", "help": "width of its MLP denoiser"})   # LatentDiffusion's default MLP width
    diffusion_depth: int = field(default=3, metadata={"check": "int", "help": "depth of its MLP denoiser"})      # LatentDiffusion's default MLP depth
    diffusion_method: str = field(default="ddpm", metadata={"check": ("ddpm", "ddim"), "help": "the diffusion sampler"})
    num_inference_steps: int | None = field(default=None, metadata={"check": "int", "optional": True, "help": "sampling steps (default: 1000 DDPM, 50 DDIM)"})
    diffusion_kwargs: tuple = ()

    def __post_init__(self):
        check_settings_fields(self)
        if not isinstance(self.diffusion_kwargs, tuple) or not all(
                isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in self.diffusion_kwargs):
            raise TypeError(f"diffusion_kwargs must be a tuple of (name, value) pairs, got {self.diffusion_kwargs!r}")


@dataclass(frozen=True, eq=False)
class ModeMixture2DResults:
    """What :func:`run_mode_mixture_2d` fitted, drew and measured (all points in the data's space).

    Attributes
    ----------
    settings : ModeMixture2DSettings
    ot_generator : OTGenerator
        The extended generator (its ``ot_``, ``detector_`` and ``latent_`` are shared with the plain one).
    diffusion : DiffusionGenerator
    data : ndarray (N, 2)
    labels : ndarray of int64 (N,)
        True mode of each data point.
    targets : ndarray (N', 2)
        The OT targets (the data, duplicates merged), in the data's space.
    singular_pairs : ndarray of int64 (S, 2)
        Target pairs across the singular set found by the detector.
    samples : dict of ndarray (n_samples, 2)
        ``"ot_plain"`` (:math:`\\nabla u_h`), ``"ot_extended"`` (piecewise-linear within a mode),
        ``"diffusion"``.
    near_singular : ndarray of bool (n_samples,)
        Extended OT samples whose source point is near the singular set.
    scores : dict
        ``off_support`` (rate per generator), ``radius``, ``n_modes_detected``, ``n_modes_true``,
        ``threshold``, ``n_singular_pairs``, ``near_singular_fraction``, ``ot_converged``, ``temperature``.
    """

    settings: ModeMixture2DSettings
    ot_generator: OTGenerator
    diffusion: DiffusionGenerator
    data: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    singular_pairs: np.ndarray
    samples: dict
    near_singular: np.ndarray
    scores: dict


def _fit_mode_mixture_generators(s: ModeMixture2DSettings, Y: np.ndarray):
    """The plain and extended OT generators (one OT map, one detector) and the diffusion generator."""
    latent = LatentSpace().fit(Y)                             # one standardisation shared by all generators
    sample_seed = spawn_seed(s.seed, "ot-sample")             # both OT generators map the same source points
    ot = SemiDiscreteOT(tol=s.ot_tol, seed=spawn_seed(s.seed, "ot"), device=DEVICE, verbose=False)
    detector = SingularSetDetector(k=s.k, seed=spawn_seed(s.seed, "detector"))
    plain = OTGenerator(latent=latent, ot=ot, detector=detector, extension="none", k=s.k, seed=sample_seed).fit(Y)
    extended = OTGenerator(latent=latent, ot=plain.ot_, detector=plain.detector_, extension="piecewise-linear",
                           k=s.k, seed=sample_seed).fit(Y)
    model = LatentDiffusion(hidden=s.diffusion_hidden, depth=s.diffusion_depth, n_steps=s.diffusion_steps,
                            device=DEVICE, seed=spawn_seed(s.seed, "diffusion"), verbose=False,
                            **dict(s.diffusion_kwargs))
    diffusion = DiffusionGenerator(model=model, latent=latent, method=s.diffusion_method,
                                   num_inference_steps=s.num_inference_steps,
                                   seed=spawn_seed(s.seed, "diffusion-sample")).fit(Y)
    return plain, extended, diffusion


def run_mode_mixture_2d(settings: ModeMixture2DSettings = ModeMixture2DSettings()) -> ModeMixture2DResults:
    """Fit OT (+ detector) and DDPM on a 2-D Gaussian mixture, sample, measure the off-support rates.

    A diffusion model learns a smooth score and so puts mass in the gaps between modes; the OT
    map :math:`\\nabla u_h` is discontinuous exactly on the singular set and sends no mass there,
    and its piecewise-linear extension blends targets only inside one mode [3]_ [4]_. The OT map is
    fitted from the uniform square to the ``n_data`` standardised points
    (:class:`~otgen.generate.OTGenerator`, one :class:`~otgen.latent.LatentSpace` shared with the
    :class:`~otgen.generate.DiffusionGenerator`); each generator draws ``n_samples`` points;
    :func:`~otgen.metrics.latent.off_support_rate` (radius: the 99th percentile of the data's
    nearest-neighbour distances) is measured at that same sample count.

    Parameters
    ----------
    settings : ModeMixture2DSettings

    Returns
    -------
    ModeMixture2DResults
    """
    s = settings
    Y, labels = TOY_DATASETS[s.dataset](s.n_data, seed=spawn_seed(s.seed, "data"))      # (N, 2), (N,)
    plain, extended, diffusion = _fit_mode_mixture_generators(s, Y)
    ext, info = extended.sample(s.n_samples, return_info=True)
    samples = {"ot_plain": np.asarray(plain.sample(s.n_samples)), "ot_extended": np.asarray(ext),
               "diffusion": np.asarray(diffusion.sample(s.n_samples))}
    rates = {name: off_support_rate(x, Y) for name, x in samples.items()}
    near = np.asarray(info["near_singular"], dtype=bool)
    ot, detector = extended.ot_, extended.detector_
    targets = extended.latent_.inverse_transform(ot.targets_.detach().cpu().numpy())
    scores = dict(off_support={name: r["rate"] for name, r in rates.items()}, radius=rates["diffusion"]["radius"],
                  n_modes_detected=int(detector.n_components_), n_modes_true=int(len(np.unique(labels))),
                  threshold=float(detector.threshold_), n_singular_pairs=int(len(detector.singular_pairs_)),
                  near_singular_fraction=float(near.mean()), ot_converged=bool(ot.converged_),
                  temperature=np.asarray(info["temperature"]))
    return ModeMixture2DResults(settings=s, ot_generator=extended, diffusion=diffusion, data=Y, labels=labels,
                                targets=np.asarray(targets), singular_pairs=np.asarray(detector.singular_pairs_),
                                samples=samples, near_singular=near, scores=scores)


# ----------------------------------------------------------------------------- detector precision / recall

@dataclass(frozen=True)
class DetectorPRSettings:
    """Settings of :func:`run_detector_pr` (the singular-set detector on two symmetric blobs).

    Parameters
    ----------
    n : int, default 400
        Points of :func:`~otgen.data.two_blobs` (labels 0 / 1, boundary :math:`x_1 = 0`).
    n_test : int, default 20000
        Seeded source points scored.
    k : int, default 3
        Top-k cells of the ground truth and of the detector.
    tol : float, default 0.05
        Total-variation tolerance of :class:`~otgen.transport.SemiDiscreteOT`.
    separation, std : float, default 4.0, 0.5
        Of :func:`~otgen.data.two_blobs`.
    source : str, default "uniform"
        A source name of :mod:`otgen.transport.sources` (otgen's or POT's).
    n_graph_samples : int, default 65536
        Source points of the detector's dual graph.
    seed : int, default 0
    """

    # 200 points a blob
    n: int = field(default=400, metadata={"check": "int", "minimum": 4, "help": "points of the two blobs"})
    # measured at the defaults: 130 of them fall in the boundary band the top-k cells see
    n_test: int = field(default=20000, metadata={"check": "int", "help": "source points scored"})
    k: int = field(default=3, metadata={"check": "int", "minimum": 2, "help": "top-k cells of the detector and the extension"})       # the detector's default top-k
    # loose, as before the move: the detector uses the cells' adjacency, not their exact masses
    tol: float = field(default=0.05, metadata={"check": "float", "help": "total-variation tolerance of the OT solve"})
    separation: float = field(default=4.0, metadata={"check": "float", "help": "distance between the blob centres"})   # two_blobs' default: 8 std between centres
    std: float = field(default=0.5, metadata={"check": "float", "help": "standard deviation of a blob"})          # two_blobs' default
    source: str = field(default="uniform", metadata={"check": SOURCES, "help": "the OT source: uniform, ball, gaussian or a POT name (unif = [0, 1]^2, normal, unif_ball)"})
    n_graph_samples: int = field(default=2**16, metadata={"check": "int", "help": "source points of the detector's dual graph"})  # the detector's default dual-graph sample
    seed: int = field(default=0, metadata={"check": "seed"})

    def __post_init__(self):
        check_settings_fields(self)


@dataclass(frozen=True, eq=False)
class DetectorPRResults:
    """What :func:`run_detector_pr` fitted and measured.

    Attributes
    ----------
    settings : DetectorPRSettings
    ot : SemiDiscreteOT
    detector : SingularSetDetector
    targets : ndarray (n, 2)
        The OT targets (the blob points, in the solver's order).
    labels : ndarray of int64 (n,)
    singular_pairs : ndarray of int64 (S, 2)
        Target pairs the detector finds singular.
    test_points : ndarray (n_test, 2)
    truth : ndarray of bool (n_test,)
        The exact top-k cells of the point carry both labels.
    flagged : ndarray of bool (n_test,)
        ``detector.predict``.
    scores : dict
        ``precision``, ``recall``, ``pair_precision``, ``pair_recall``, ``n_true``, ``n_flagged``,
        ``true_positives``, ``false_positives``, ``false_negatives``, ``threshold``, ``n_components``,
        ``components_match_labels``, ``n_pairs``, ``n_cross_pairs``, ``ot_converged``.
    """

    settings: DetectorPRSettings
    ot: SemiDiscreteOT
    detector: SingularSetDetector
    targets: np.ndarray
    labels: np.ndarray
    singular_pairs: np.ndarray
    test_points: np.ndarray
    truth: np.ndarray
    flagged: np.ndarray
    scores: dict


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the labellings a and b (n,) define the same partition."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def _detector_scores(truth, flagged, labels, detector, ot) -> dict:
    """Point-level and pair-level precision / recall of the detector against the blob labels."""
    tp, fp, fn = int((truth & flagged).sum()), int((~truth & flagged).sum()), int((truth & ~flagged).sum())
    pairs, singular = np.asarray(detector.pairs_), np.asarray(detector.singular_, dtype=bool)
    cross = labels[pairs[:, 0]] != labels[pairs[:, 1]]                   # pairs joining the two blobs
    ptp = int((cross & singular).sum())
    return dict(precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
                pair_precision=_ratio(ptp, int(singular.sum())), pair_recall=_ratio(ptp, int(cross.sum())),
                n_true=int(truth.sum()), n_flagged=int(flagged.sum()), true_positives=tp, false_positives=fp,
                false_negatives=fn, threshold=float(detector.threshold_), n_components=int(detector.n_components_),
                components_match_labels=_same_partition(np.asarray(detector.cell_component_), labels),
                n_pairs=int(len(pairs)), n_cross_pairs=int(cross.sum()), ot_converged=bool(ot.converged_))


def _near_other_blob(X, ot, labels) -> np.ndarray:
    """Source distance of each point (m, d) to the nearest facet plane of its cell with a cell of the other label."""
    Y, h = ot.targets_.detach().double(), ot.heights_.detach().double()
    S = X.double() @ Y.T + h                                                          # (m, N) exact scores
    b = S.argmax(1)
    sep = torch.cdist(Y[b], Y).clamp_min(1e-300)                                       # (m, N) |y_b - y_j|
    dist = (S.gather(1, b[:, None]) - S) / sep
    other = torch.as_tensor(labels)[None, :] != torch.as_tensor(labels)[b][:, None]
    return dist.masked_fill(~other, float("inf")).min(1).values.numpy()


def run_detector_pr(settings: DetectorPRSettings = DetectorPRSettings()) -> DetectorPRResults:
    """Fit OT and the detector on two blobs (without the labels), score seeded source points.

    Ground truth for a test source point x in cell b: its source distance to the other blob's
    territory, :math:`\\min_{j:\\,\\ell_j \\ne \\ell_b} (s_b - s_j) / |y_b - y_j|` over all targets (exact
    scores, no dual graph), is at most the detector's band, ``band * cell_width_``.
    The detector flags x when ``predict(x)``. Precision :math:`TP / (TP + FP)` and recall
    :math:`TP / (TP + FN)` over ``n_test`` points, and the same at the level of the dual-graph
    pairs (flagged pairs against pairs joining the two blobs).

    Parameters
    ----------
    settings : DetectorPRSettings

    Returns
    -------
    DetectorPRResults
    """
    s = settings
    Y, labels = two_blobs(s.n, d=2, separation=s.separation, std=s.std, seed=spawn_seed(s.seed, "data"))
    ot = SemiDiscreteOT(source=s.source, tol=s.tol, seed=spawn_seed(s.seed, "ot"), device=DEVICE,
                        verbose=False).fit(Y)
    detector = SingularSetDetector(k=s.k, n_samples=s.n_graph_samples, seed=spawn_seed(s.seed, "detector")).fit(ot)
    X = sample_source(ot.source_, s.n_test, 2, seed=spawn_seed(s.seed, "test"))        # (n_test, 2) tensor
    truth = _near_other_blob(X, ot, labels) <= detector.band * detector.cell_width_
    X = X.numpy()
    flagged = np.asarray(detector.predict(X), dtype=bool)
    return DetectorPRResults(settings=s, ot=ot, detector=detector, targets=ot.targets_.detach().cpu().numpy(),
                             labels=labels, singular_pairs=np.asarray(detector.singular_pairs_), test_points=X,
                             truth=truth, flagged=flagged,
                             scores=_detector_scores(truth, flagged, labels, detector, ot))
