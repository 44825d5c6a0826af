"""Generators behind one interface: raw latent codes in, raw latent codes out, through one LatentSpace.

Every generator is an estimator (:class:`~otgen._base.BaseEstimator`):
``fit(codes)`` takes the raw codes :math:`y` (n, d) of an autoencoder; ``sample(n, seed=None)``
returns ``n`` raw codes (a float32 numpy array), ready for the decoder. Inside, each works
on the standardised codes :math:`z = (y - m) / s` of its ``latent_``
(:class:`~otgen.latent.LatentSpace`); a ``latent`` given already fitted is used as it is, so
all the generators of a comparison share one standardisation and no caller needs to know
which generator it holds.

* :class:`OTGenerator` pushes source points by the Brenier map :math:`\\nabla u_h` of the
  semi-discrete OT from the source to the standardised codes [1]_; with the piecewise-linear
  extension of AE-OT [2]_ it interpolates the targets of the top-k cells of a source point, but
  only inside one mode: at the singular set (mode boundary) it never blends across, so no
  generated point mixes two modes (the seeds' "critical states" argument).
* :class:`DiffusionGenerator` samples a latent diffusion model (DDPM / DDIM) [3]_ [4]_.
* :class:`GaussianCodeGenerator` is the baseline :math:`\\mathcal N(m, \\Sigma)` of the codes.

References
----------
.. [1] Y. Brenier, "Polar factorization and monotone rearrangement of vector-valued
   functions", Comm. Pure Appl. Math. 44 (1991).
.. [2] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [3] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
.. [4] J. Song, C. Meng, S. Ermon, "Denoising diffusion implicit models", ICLR 2021.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from otgen._base import BaseEstimator, check_seed, clone, part_from_state, part_state, spawn_seed
from otgen._validation import as_tensor, check_choice, check_positive_float, check_positive_int
from otgen.diffusion import LatentDiffusion
from otgen.latent import LatentSpace
from otgen.singular import SingularSetDetector
from otgen.transport import SemiDiscreteOT
from otgen.transport.sources import sample_source

__all__ = ["Generator", "OTGenerator", "DiffusionGenerator", "GaussianCodeGenerator", "EXTENSIONS",
           "BLEND_RULES", "BOUNDARY_RULES"]

EXTENSIONS = ("piecewise-linear", "none")
BLEND_RULES = ("component", "facet")
BOUNDARY_RULES = ("best", "resample")
DIFFUSION_METHODS = ("ddpm", "ddim", "dpm_solver")
_TEMPERATURE_SAMPLES = 1 << 12      # source points whose median top-2 gap sets the temperature (median to ~2 %)
_MIN_TEMPERATURE = 1e-12            # a zero median gap (all points on facets) would divide by zero
_TARGET_RTOL = 1e-5                 # a fitted ot is "fitted on these codes" when its targets agree to float32 precision
_TARGET_ATOL = 1e-6
_WEIGHT_ATOL = 1e-8                 # ... and its weights to well below 1 / N


# ----------------------------------------------------------------------------- parts (sub-estimators)

def _fitted(est) -> bool:
    return est._is_fitted() if hasattr(est, "_is_fitted") else False


# ----------------------------------------------------------------------------- base

class Generator(BaseEstimator):
    """Base class: ``fit(codes)`` on raw codes, ``sample(n)`` -> raw codes (n, d) float32 numpy.

    Subclasses implement ``fit`` (calling :meth:`_fit_latent` first) and ``_sample(n, seed) ->
    (raw codes, info)``; ``seed=None`` in :meth:`sample` means the instance's ``seed``.

    Parameters
    ----------
    latent : LatentSpace or None, default None
        The standardisation of the codes: used as it is when already fitted (shared by several
        generators), else cloned and fitted on the codes; ``None`` fits a ``LatentSpace()``.
    seed : int, default 0
        Default seed of :meth:`sample` (and of the generator's own fits).

    Attributes
    ----------
    latent_ : LatentSpace
        The fitted standardisation.
    n_features_in_ : int
        Dimension d of the codes.
    """

    _SAVE_VERSION = 1
    _FITTED_ATTR = "latent_"

    def __init__(self, latent=None, *, seed=0):
        self.latent = latent
        self.seed = seed

    def fit(self, codes):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_latent(self, codes, min_rows: int = 1) -> np.ndarray:
        """Set ``latent_`` and ``n_features_in_``; return the standardised codes z (n, d) float32."""
        y = as_tensor(codes, "codes", ndim=2, dtype=torch.float64, min_rows=min_rows).cpu().numpy()
        latent = self.latent
        if latent is None:
            latent = LatentSpace().fit(y)
        elif not isinstance(latent, LatentSpace):
            raise TypeError(f"latent must be a LatentSpace or None, got {type(latent).__name__}")
        elif not latent._is_fitted():
            latent = clone(latent).fit(y)
        z = latent.transform(y).astype(np.float32)            # checks the dimension of a given fitted space
        self.latent_, self.n_features_in_ = latent, int(y.shape[1])
        return z

    def sample(self, n, seed=None, *, return_info=False):
        """Draw ``n`` raw codes.

        Parameters
        ----------
        n : int
        seed : int or None
            ``None``: the generator's ``seed``.
        return_info : bool, default False
            Also return a dict of numpy arrays / numbers describing the draw (per class).

        Returns
        -------
        codes : ndarray of float32, shape (n, d)
            In the raw code space (the decoder's input), not standardised.
        info : dict
            Only with ``return_info=True``.
        """
        self._check_fitted()
        n = check_positive_int(n, "n")
        seed = check_seed(self.seed if seed is None else seed)
        codes, info = self._sample(n, seed, want_info=return_info)
        return (codes, info) if return_info else codes

    def _sample(self, n, seed, want_info=False):  # pragma: no cover - abstract
        """Raw codes (n, d) float32 and the info dict (extra diagnostics only when ``want_info``)."""
        raise NotImplementedError

    def _codes(self, z) -> np.ndarray:
        """Standardised codes z (n, d) (numpy or tensor) -> raw codes, float32 numpy."""
        z = z.detach().cpu().double().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, np.float64)
        return self.latent_.inverse_transform(z).astype(np.float32)


# ----------------------------------------------------------------------------- semi-discrete OT

def _merge_duplicates(z: np.ndarray):
    """Distinct rows of z, their weights (None when all rows are distinct) and the row of each input."""
    zu, inv, counts = np.unique(z, axis=0, return_inverse=True, return_counts=True)
    if len(zu) == len(z):
        return z, None, np.arange(len(z), dtype=np.int64)
    return zu, counts / counts.sum(), inv.reshape(-1).astype(np.int64)


def _fitted_on(ot, targets: np.ndarray, weights) -> bool:
    """True when ``ot`` is fitted on ``targets`` (N, d) with ``weights`` (N,) (None: uniform)."""
    Y = ot.targets_.detach().cpu().double()
    if tuple(Y.shape) != targets.shape:
        return False
    if not torch.allclose(Y, torch.from_numpy(targets).double(), rtol=_TARGET_RTOL, atol=_TARGET_ATOL):
        return False
    w = np.full(len(targets), 1.0 / len(targets)) if weights is None else weights
    return bool(np.allclose(ot.weights_.detach().cpu().double().numpy(), w, rtol=0, atol=_WEIGHT_ATOL))


class OTGenerator(Generator):
    """Semi-discrete OT generator: :math:`x \\sim \\mu \\mapsto \\nabla u_h(x)`, optionally extended within modes.

    ``fit(codes)`` standardises the codes with ``latent_``, merges duplicate codes (their weights
    added: the solver needs distinct targets), solves the semi-discrete OT from the source μ to
    them (``ot_``) and finds its singular set (``detector_``). ``sample`` maps source points and
    returns ``latent_.inverse_transform`` of the images.

    ``extension="none"``: exactly the Brenier map, every point is a target
    :math:`y_{i(x)}`, :math:`i(x) = \\arg\\max_i \\langle x, y_i\\rangle + h_i`.

    ``extension="piecewise-linear"`` (AE-OT [2]_): let :math:`i_1, \\dots, i_k` be the top-k cells
    of x with scores :math:`s_1 \\ge \\dots \\ge s_k` (:math:`s_m = \\langle x, y_{i_m}\\rangle + h_{i_m}`).
    When the blend rule allows it, the point is

    .. math:: T(x) = \\sum_m w_m\\, y_{i_m}, \\qquad
              w_m = \\frac{e^{-(s_1 - s_m)/\\tau}}{\\sum_l e^{-(s_1 - s_l)/\\tau}},

    a convex combination of targets of one mode. The score gap :math:`s_1 - s_m` equals the
    distance of x to the facet hyperplane of :math:`(i_1, i_m)` times :math:`|y_{i_1} - y_{i_m}|`,
    so the weights are equal on a facet (T is continuous across facets inside a mode) and decay
    to the plain map deep inside a cell. The temperature :math:`\\tau` (``temperature``, default:
    the median top-2 gap :math:`s_1 - s_2` of :math:`2^{12}` source points from the stream
    ``spawn_seed(seed, "temperature")``) sets the width of the blending band to a typical cell size.

    The blend rule (``blend_rule``) decides whether the top-k cells of x may be blended:
    ``"component"`` when they all lie in one mode (:meth:`SingularSetDetector.same_component`),
    ``"facet"`` when no two of them are separated by a singular facet
    (:meth:`SingularSetDetector.no_singular_pair`, the local rule of AE-OT; it matters when the
    modes also touch along non-singular facets). Where it refuses (x is at the singular set) the
    point is never blended across the boundary: ``boundary="best"`` keeps the plain map
    :math:`y_{i_1}` (the law of the samples stays the push-forward of μ, the mode boundary stays
    sharp); ``boundary="resample"`` redraws the source point (round ``r`` from the stream
    ``spawn_seed(seed, "resample", r)``) until it is away from the singular set (at most
    ``max_resample`` rounds, then "best"), which removes the source mass near the boundary and so
    slightly changes the mode proportions.

    Parameters
    ----------
    latent : LatentSpace or None, default None
        Used as it is when fitted, else cloned and fitted on the codes (``None``: ``LatentSpace()``).
    ot : SemiDiscreteOT or None, default None
        Used as it is when already fitted on these standardised codes (same targets and weights);
        otherwise a clone is fitted (``None``: ``SemiDiscreteOT(seed=seed)``).
    detector : SingularSetDetector or None, default None
        Used as it is when fitted on ``ot_``; otherwise a clone is fitted on ``ot_``
        (``None``: ``SingularSetDetector(k=k, seed=seed)``).
    extension : {"piecewise-linear", "none"}, default "piecewise-linear"
    k : int, default 3
        Cells blended (k >= 2).
    blend_rule : {"component", "facet"}, default "component"
        When the top-k cells may be blended (above).
    temperature : float or None, default None
        τ of the blending weights; ``None``: the median top-2 score gap.
    boundary : {"best", "resample"}, default "best"
    max_resample : int, default 20
        Rounds of ``boundary="resample"``.
    seed : int, default 0
        Default seed of :meth:`sample`; also seeds the default solver and detector.

    Attributes
    ----------
    latent_ : LatentSpace
    ot_ : SemiDiscreteOT
        Fitted on the distinct standardised codes.
    target_index_ : ndarray of int64, shape (n,)
        The OT target (row of ``ot_.targets_``) of each code given to :meth:`fit`.
    temperature_ : float or None
        ``None`` for ``extension="none"``.
    detector_ : SingularSetDetector
        Fitted on ``ot_``.
    n_features_in_ : int

    Notes
    -----
    ``info`` of ``sample(n, return_info=True)`` (numpy): ``source`` (n, d) source points,
    ``cells`` (n,) int64 best cells, ``near_singular`` (n,) bool (the blend rule refused the
    point's top-k cells; for ``extension="none"``, ``detector_.predict``, which costs about three
    times the map itself and so is run only for ``return_info``), ``blended`` (n,) bool
    (the extension was applied), ``n_resampled`` (int), ``temperature`` (float or None).
    ``save`` writes the latent space, the solver and the detector with their settings in one file.
    """

    _FITTED_ATTR = "detector_"

    def __init__(self, latent=None, ot=None, detector=None, *, extension="piecewise-linear", k=3,
                 blend_rule="component", temperature=None, boundary="best", max_resample=20, seed=0):
        self.latent = latent
        self.ot = ot
        self.detector = detector
        self.extension = extension
        self.k = k
        self.blend_rule = blend_rule
        self.temperature = temperature
        self.boundary = boundary
        self.max_resample = max_resample
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def _check_settings(self):
        check_choice(self.extension, "extension", EXTENSIONS)
        check_choice(self.blend_rule, "blend_rule", BLEND_RULES)
        check_choice(self.boundary, "boundary", BOUNDARY_RULES)
        check_positive_int(self.k, "k", minimum=2)
        check_positive_int(self.max_resample, "max_resample", minimum=0)
        check_seed(self.seed)
        if self.temperature is not None:
            check_positive_float(self.temperature, "temperature")
        if self.ot is not None and not isinstance(self.ot, SemiDiscreteOT):
            raise TypeError(f"ot must be a SemiDiscreteOT or None, got {type(self.ot).__name__}")
        if self.detector is not None and not isinstance(self.detector, SingularSetDetector):
            raise TypeError(f"detector must be a SingularSetDetector or None, got {type(self.detector).__name__}")

    def fit(self, codes) -> "OTGenerator":
        """Standardise ``codes`` (n, d), fit (or reuse) the OT map and its singular-set detector.

        Parameters
        ----------
        codes : array_like, shape (n, d), n >= 2
            Raw latent codes.

        Returns
        -------
        self
        """
        self._check_settings()
        z = self._fit_latent(codes, min_rows=2)
        targets, weights, self.target_index_ = _merge_duplicates(z)
        self.ot_ = self._fit_ot(targets, weights)
        self.temperature_ = self._fit_temperature()
        self.detector_ = self._fit_detector()
        return self

    def _fit_ot(self, targets, weights):
        ot = self.ot
        if ot is not None and _fitted(ot):
            if _fitted_on(ot, targets, weights):
                return ot
            warnings.warn("the given ot is fitted on other targets than these standardised codes: fitting a clone "
                          "of it on them", UserWarning, stacklevel=3)
        base = SemiDiscreteOT(seed=self.seed) if ot is None else clone(ot)
        return base.fit(targets, weights)

    def _fit_detector(self):
        det = self.detector
        if det is not None and det.fitted_on(self.ot_):
            return det.attach(self.ot_)
        base = SingularSetDetector(k=self.k, seed=self.seed) if det is None else clone(det)
        return base.fit(self.ot_)

    def _fit_temperature(self):
        if self.extension == "none":
            return None
        if self.temperature is not None:
            return float(self.temperature)
        vals, _ = self.ot_.topk(self._draw(_TEMPERATURE_SAMPLES, spawn_seed(self.seed, "temperature")), 2)
        gap = (vals[:, 0] - vals[:, 1]).double()
        return max(float(gap.median()), _MIN_TEMPERATURE)

    # ------------------------------------------------------------------ sampling
    def _draw(self, n, seed) -> torch.Tensor:
        Y = self.ot_.targets_
        return sample_source(self.ot_.source_, n, Y.shape[1], seed=seed, dtype=Y.dtype, device=Y.device)

    def _may_blend(self, idx: torch.Tensor) -> torch.Tensor:
        """The blend rule on rows of top-k cells (m, k) -> (m,) bool tensor on idx's device."""
        if self.blend_rule == "facet":
            return self.detector_.no_singular_pair(idx)
        return self.detector_.same_component(idx)

    def _map(self, X, flag=True):
        """Map source points X (m, d) -> (points, best cells, near_singular, blended), torch on X's device.

        Without ``extension``, ``near_singular`` is the detector's test, run only when ``flag`` (else all False)."""
        Y = self.ot_.targets_
        if self.extension == "none":
            cells = self.ot_.assign(X)
            near = self.detector_.predict(X).to(Y.device) if flag else torch.zeros_like(cells, dtype=torch.bool)
            return Y[cells], cells, near, torch.zeros_like(near)
        vals, idx = self.ot_.topk(X, min(self.k, Y.shape[0]))                           # (m, k) descending
        ok = self._may_blend(idx).to(Y.device)
        w = torch.softmax((vals - vals[:, :1]).double() / self.temperature_, dim=1)     # (m, k)
        blended = (w[:, :, None] * Y[idx].double()).sum(1).to(Y.dtype)                 # (m, d)
        cells = idx[:, 0]
        return torch.where(ok[:, None], blended, Y[cells]), cells, ~ok, ok

    def _sample(self, n, seed, want_info=False):
        check_choice(self.boundary, "boundary", BOUNDARY_RULES)
        check_positive_int(self.max_resample, "max_resample", minimum=0)
        X = self._draw(n, seed)
        points, cells, near, blended = self._map(X, flag=want_info)
        n_resampled = 0
        if self.extension != "none" and self.boundary == "resample":
            for r in range(1, self.max_resample + 1):
                bad = torch.nonzero(near).flatten()
                if len(bad) == 0:
                    break
                n_resampled += len(bad)
                Xr = self._draw(len(bad), spawn_seed(seed, "resample", r))
                X[bad], points[bad], cells[bad], near[bad], blended[bad] = (Xr,) + self._map(Xr)
        if not want_info:
            return self._codes(points), None
        info = dict(source=X.cpu().numpy(), cells=cells.cpu().numpy().astype(np.int64),
                    near_singular=near.cpu().numpy(), blended=blended.cpu().numpy(), n_resampled=int(n_resampled),
                    temperature=self.temperature_)
        return self._codes(points), info

    # ------------------------------------------------------------------ files
    def _get_state(self) -> dict:
        return {"latent": part_state(self.latent_), "ot": part_state(self.ot_),
                "detector": part_state(self.detector_), "target_index": self.target_index_,
                "temperature": self.temperature_}

    def _set_state(self, state: dict, device=None) -> None:
        self.latent_ = part_from_state(LatentSpace, state["latent"], device)
        self.n_features_in_ = self.latent_.n_features_in_
        self.ot_ = part_from_state(SemiDiscreteOT, state["ot"], device)
        self.target_index_ = np.asarray(state["target_index"], np.int64)
        self.temperature_ = None if state["temperature"] is None else float(state["temperature"])
        self.detector_ = part_from_state(SingularSetDetector, state["detector"], device).attach(self.ot_)


# ----------------------------------------------------------------------------- diffusion

class DiffusionGenerator(Generator):
    """A :class:`~otgen.diffusion.LatentDiffusion` behind the :class:`Generator` interface [3]_ [4]_.

    ``fit(codes)``: the model is used as it is when already fitted (its ``sample`` returns codes
    in the space it was fitted in: fit it on the raw codes); otherwise a clone of it (``None``: a
    ``LatentDiffusion(seed=seed)``) is given ``latent=latent_`` and fitted on the raw codes, so it
    trains on ``latent_.transform(codes)`` -- the standardisation every generator shares.

    Parameters
    ----------
    model : LatentDiffusion or None, default None
    latent : LatentSpace or None, default None
        Used as it is when fitted, else cloned and fitted on the codes (``None``: ``LatentSpace()``).
    method : {"ddpm", "ddim", "dpm_solver"}, default "ddpm"
        Ancestral DDPM, DDIM, or multistep DPM-Solver++ (2M) of the model.
    num_inference_steps : int or None, default None
        ``None``: the model's default for ``method``.
    seed : int, default 0
        Default seed of :meth:`sample` (and of the default model).

    Attributes
    ----------
    latent_ : LatentSpace
    model_ : LatentDiffusion
        Fitted.
    n_features_in_ : int

    Notes
    -----
    ``info`` of ``sample(n, return_info=True)``: the model's sampling diagnostics (e.g. ``x0_variance``, the
    trajectory variance of Aithal et al.) with ``method`` and ``num_inference_steps``.
    ``save`` writes the latent space and the model with their settings in one file.
    """

    _FITTED_ATTR = "model_"

    def __init__(self, model=None, latent=None, *, method="ddpm", num_inference_steps=None, seed=0):
        self.model = model
        self.latent = latent
        self.method = method
        self.num_inference_steps = num_inference_steps
        self.seed = seed

    def _check_settings(self):
        if self.model is not None and not isinstance(self.model, LatentDiffusion):
            raise TypeError(f"model must be a LatentDiffusion or None, got {type(self.model).__name__}")
        check_choice(self.method, "method", DIFFUSION_METHODS)
        if self.num_inference_steps is not None:
            check_positive_int(self.num_inference_steps, "num_inference_steps")
        check_seed(self.seed)

    def fit(self, codes) -> "DiffusionGenerator":
        """Standardisation and (unless given fitted) the diffusion model of ``codes`` (n, d), n >= 2.

        Returns
        -------
        self
        """
        self._check_settings()
        self._fit_latent(codes, min_rows=2)
        model = self.model
        if model is not None and _fitted(model):
            if model.n_features_in_ != self.n_features_in_:
                raise ValueError(f"model was fitted on codes of dimension {model.n_features_in_}, "
                                 f"got codes of dimension {self.n_features_in_}")
            self.model_ = model
            return self
        base = LatentDiffusion(seed=self.seed) if model is None else clone(model)
        y = as_tensor(codes, "codes", ndim=2, dtype=torch.float32).cpu().numpy()
        self.model_ = base.set_params(latent=self.latent_).fit(y)
        return self

    def _sample(self, n, seed, want_info=False):
        check_choice(self.method, "method", DIFFUSION_METHODS)
        out = self.model_.sample(n, seed=seed, method=self.method, num_inference_steps=self.num_inference_steps,
                                 return_info=want_info)
        codes, info = out if want_info else (out, {})
        return np.asarray(codes, np.float32), dict(dict(method=self.method, num_inference_steps=self.num_inference_steps),
                                                   **info)

    def _get_state(self) -> dict:
        return {"latent": part_state(self.latent_), "model": part_state(self.model_)}

    def _set_state(self, state: dict, device=None) -> None:
        self.latent_ = part_from_state(LatentSpace, state["latent"], device)
        self.n_features_in_ = self.latent_.n_features_in_
        self.model_ = part_from_state(LatentDiffusion, state["model"], device)


# ----------------------------------------------------------------------------- Gaussian baseline

class GaussianCodeGenerator(Generator):
    """Baseline: the Gaussian :math:`\\mathcal N(m, \\Sigma)` of the standardised codes.

    ``fit`` takes the mean :math:`m` and covariance :math:`\\Sigma` of :math:`z =`
    ``latent_.transform(codes)`` and a factor :math:`F = V \\Lambda^{1/2}` of
    :math:`\\Sigma = V \\Lambda V^\\top` (eigenvalues clipped at 0, so a singular covariance is
    fine); ``sample`` draws :math:`z = m + F e`, :math:`e \\sim \\mathcal N(0, I)` (a torch
    generator seeded with ``seed``), and returns ``latent_.inverse_transform(z)``.

    Parameters
    ----------
    latent : LatentSpace or None, default None
        Used as it is when fitted, else cloned and fitted on the codes (``None``: ``LatentSpace()``).
    seed : int, default 0
        Default seed of :meth:`sample`.

    Attributes
    ----------
    latent_ : LatentSpace
    mean_ : ndarray of float64, shape (d,)
        Mean of the standardised codes.
    factor_ : ndarray of float64, shape (d, d)
        ``factor_ @ factor_.T`` is their covariance.
    n_features_in_ : int

    Notes
    -----
    ``info`` of ``sample(n, return_info=True)`` is empty.
    """

    _FITTED_ATTR = "factor_"

    def __init__(self, latent=None, *, seed=0):
        self.latent = latent
        self.seed = seed

    def fit(self, codes) -> "GaussianCodeGenerator":
        """Mean and covariance of the standardised ``codes`` (n, d), n >= 2.

        Returns
        -------
        self
        """
        check_seed(self.seed)
        z = self._fit_latent(codes, min_rows=2).astype(np.float64)
        self.mean_ = z.mean(0)
        cov = np.atleast_2d(np.cov(z, rowvar=False))
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        self.factor_ = v * np.sqrt(np.clip(w, 0, None))                 # (d, d), factor @ factor.T = cov
        return self

    def _sample(self, n, seed, want_info=False):
        g = torch.Generator().manual_seed(seed)
        e = torch.randn(n, len(self.mean_), generator=g, dtype=torch.float64)
        z = torch.from_numpy(self.mean_) + e @ torch.from_numpy(self.factor_).T
        return self._codes(z), {}

    def _get_state(self) -> dict:
        return {"latent": part_state(self.latent_), "mean": self.mean_, "factor": self.factor_}

    def _set_state(self, state: dict, device=None) -> None:
        self.latent_ = part_from_state(LatentSpace, state["latent"], device)
        self.n_features_in_ = self.latent_.n_features_in_
        self.mean_ = np.asarray(state["mean"], np.float64)
        self.factor_ = np.asarray(state["factor"], np.float64)
