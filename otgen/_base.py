"""The estimator contract shared by every fitted object of otgen.

Every estimator (``SemiDiscreteOT``, ``SingularSetDetector``, the generators,
``LatentDiffusion``, the autoencoders, the classifier, ``LatentSpace``) keeps one
contract, the one of scikit-learn [1]_:

- the constructor only stores its keyword settings, under their own names;
- ``fit`` validates the settings and the data, learns attributes whose names end
  in ``_`` and returns ``self``;
- ``get_params(deep=True)`` / ``set_params(**params)`` / ``repr`` come from the
  constructor's signature, so ``sklearn.base.clone`` works;
- a method used before ``fit`` raises :class:`NotFittedError` (a ``ValueError`` and
  an ``AttributeError``, as in scikit-learn);
- ``save(path)`` writes one versioned file atomically (a temporary file, then a
  rename: a save killed half-way leaves the previous file as it was), and
  ``Class.load(path)`` reads it with ``torch.load(weights_only=True)`` -- a file
  can hold tensors, numbers, strings and containers of them, never code -- and
  refuses, with a clear error, a file of another class or format version.

Random streams: one integer seed per estimator; independent streams inside it are
spawned from that seed by name (:func:`spawn_seed`), never by adding constants.

References
----------
.. [1] L. Buitinck et al., "API design for machine learning software: experiences
   from the scikit-learn project", ECML PKDD Workshop (2013).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import numbers
import os
import tempfile
import zlib

import numpy as np
import torch

__all__ = ["NotFittedError", "BaseEstimator", "clone", "part_state", "part_from_state", "check_seed", "spawn_seed", "torch_generator", "atomic_torch_save",
           "safe_torch_load", "like_input", "flush_denormals"]

FILE_FORMAT = "otgen"          # marks a file written by BaseEstimator.save
_NDARRAY = "__ndarray__"        # marks a numpy array stored as a tensor (weights_only cannot read numpy)


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (or ``load``)."""


# ----------------------------------------------------------------------------- seeds

def check_seed(seed, name: str = "seed") -> int:
    """A non-negative integer seed, or ``TypeError`` / ``ValueError`` saying what was received."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}")
    return int(seed)


def spawn_seed(seed: int, *names) -> int:
    """The seed of the random stream ``names`` spawned from ``seed`` (63-bit int).

    ``numpy.random.SeedSequence(seed, spawn_key=...)`` with one key per name (a string
    is hashed with CRC-32, an integer used as it is): streams with different names are
    independent, the same names always give the same seed.

    >>> spawn_seed(0, "temperature") == spawn_seed(0, "temperature") != spawn_seed(0, "resample", 1)
    True
    """
    key = tuple(zlib.crc32(n.encode()) if isinstance(n, str) else check_seed(n, "stream index") for n in names)
    state = np.random.SeedSequence(check_seed(seed), spawn_key=key).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def torch_generator(seed: int, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(check_seed(seed))


#: A float32 subnormal (the smallest normal float32 is 1.18e-38): it reads as 0 once denormals are flushed.
_SUBNORMAL = 1e-40


def denormals_flushed() -> bool:
    """Whether this thread of the CPU treats subnormal floats as zero: a subnormal times 1 reads as 0 under DAZ."""
    return float(torch.tensor([_SUBNORMAL], dtype=torch.float32, device="cpu") * 1.0) == 0.0


@contextlib.contextmanager
def flush_denormals():
    """Flush subnormal floats to zero on the CPU for the duration of a command, training or sampling loop.

    As a network trains, some gradients sink below the smallest normal float: a sigmoid decoder's
    well-drawn background pixels have ``sigmoid(x) < 1e-32``, so their loss gradient, divided by the
    number of pixels, is subnormal, and it flows back through the transposed convolution and the
    blocks below. x86 CPUs compute with subnormals tens of times slower, and so do the convolutions
    that meet them. Flushing them (FTZ/DAZ, :func:`torch.set_flush_denormal`) changes those values
    by less than 1.2e-38. The previous mode is restored on exit; where the CPU cannot flush, nothing
    changes; other devices are unaffected.

    The mode belongs to a thread, and a thread starts with its parent's: torch's worker threads started
    inside the block flush, and keep flushing after it; a pool started before it does not (only the calling
    thread does). This holds on Linux, where a thread starts with its parent's mode. The mode covers all of the
    thread's CPU float arithmetic (numpy too). The
    ``otgen`` command line enters the block before any torch work, so every thread of a command flushes;
    in your own script, enter it (or call ``torch.set_flush_denormal(True)``) before the first torch
    operation. ``benchmarks/bench_denormals.py`` measures the gain, fit against fit.
    """
    previous = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


# ----------------------------------------------------------------------------- numpy in, numpy out

def like_input(out, ref):
    """``out`` (a tensor) on ``ref``'s device when ``ref`` is a tensor, else as a numpy array."""
    if isinstance(ref, torch.Tensor):
        return out.to(ref.device) if isinstance(out, torch.Tensor) else out
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    return out


# ----------------------------------------------------------------------------- files

def encode_state(obj):
    """Numpy arrays and scalars -> tensors / Python numbers, recursively (weights_only can read the result)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "USO":
            return {_NDARRAY: obj.tolist(), "dtype": str(obj.dtype)}
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: encode_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode_state(v) for v in obj)
    return obj


def decode_state(obj):
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            v = obj[_NDARRAY]
            return np.asarray(v, dtype=obj["dtype"]) if "dtype" in obj else v.numpy()
        return {k: decode_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode_state(v) for v in obj)
    return obj


def atomic_torch_save(payload, path) -> None:
    """``torch.save(payload)`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safe_torch_load(path, what: str = "otgen file", map_location="cpu"):
    """``torch.load(weights_only=True)``; any failure becomes a ``ValueError`` naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:   # unpickling errors, truncated files, foreign formats
        raise ValueError(f"{path} cannot be read as a {what} (torch.load with weights_only=True failed: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


# ----------------------------------------------------------------------------- the estimator

class BaseEstimator:
    """Settings from the constructor's signature; fitted attributes end in ``_``; one file format.

    Subclasses set ``_SAVE_VERSION`` (bump it when the saved state changes) and implement
    ``_get_state() -> dict`` (the fitted attributes, tensors / arrays / numbers / strings)
    and ``_set_state(state, device)``; ``_FITTED_ATTR`` names the attribute whose presence
    means fitted.
    """

    _SAVE_VERSION = 1
    _FITTED_ATTR: str = ""

    # -- parameters
    @classmethod
    def _param_names(cls) -> list:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its settings explicitly (no *args / **kwargs)")
            names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict:
        """The constructor settings; with ``deep``, also ``name__sub`` for settings that are estimators."""
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params(deep=True).items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor settings (``name__sub`` reaches into a sub-estimator); returns self."""
        valid = set(self._param_names())
        nested = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {sorted(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        shown = []
        for name in self._param_names():
            value, default = getattr(self, name), sig.parameters[name].default
            try:
                same = value is default or bool(value == default)
            except Exception:            # arrays, tensors
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # -- fitted state
    def _is_fitted(self) -> bool:
        return bool(self._FITTED_ATTR) and self._FITTED_ATTR in self.__dict__

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(...) first "
                                 f"(or {type(self).__name__}.load(path))")

    def _get_state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_state(self, state: dict, device=None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _saved_params(self) -> dict:
        """Settings written to the file (sub-estimators and devices are not settings of the file)."""
        out = {}
        for k, v in self.get_params(deep=False).items():
            if k == "device" or isinstance(v, BaseEstimator):
                continue
            out[k] = str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v
        return out

    # -- files
    def save(self, path) -> None:
        """Write the settings and the fitted state to ``path`` atomically (versioned, readable with weights_only)."""
        self._check_fitted()
        payload = {"format": FILE_FORMAT, "class": type(self).__name__, "version": self._SAVE_VERSION,
                   "params": encode_state(self._saved_params()), "state": encode_state(self._get_state())}
        atomic_torch_save(payload, path)

    @classmethod
    def _read_payload(cls, path) -> dict:
        payload = safe_torch_load(path, f"{cls.__name__} file")
        if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
            raise ValueError(f"{os.fspath(path)} is not a file written by an otgen estimator's save()")
        if payload.get("class") != cls.__name__:
            raise ValueError(f"{os.fspath(path)} holds a {payload.get('class')}, not a {cls.__name__}: "
                             f"read it with {payload.get('class')}.load")
        if payload.get("version") != cls._SAVE_VERSION:
            raise ValueError(f"{os.fspath(path)} was written by {cls.__name__} file version {payload.get('version')}; "
                             f"this otgen reads version {cls._SAVE_VERSION}: refit and save again")
        return payload

    @classmethod
    def load(cls, path, device=None, **settings):
        """Read an estimator written by :meth:`save` (onto ``device``; ``settings`` override saved ones)."""
        payload = cls._read_payload(path)
        return _build(cls, decode_state(payload["params"]), decode_state(payload["state"]), device, settings)


def _build(cls, params: dict, state: dict, device, overrides: dict):
    """An estimator of ``cls`` from saved settings and fitted state (``device`` and overrides applied)."""
    params = dict(params)
    if isinstance(params.get("dtype"), str):
        params["dtype"] = getattr(torch, params["dtype"])
    names = set(cls._param_names())
    if "device" in names:
        params["device"] = device
    params.update(overrides)
    est = cls(**{k: v for k, v in params.items() if k in names})
    est._set_state(state, device)
    return est


def clone(est):
    """An unfitted copy of ``est`` with the same settings (sub-estimators cloned too), like ``sklearn.base.clone``."""
    params = est.get_params(deep=False)
    return type(est)(**{k: clone(v) if isinstance(v, BaseEstimator) else copy.deepcopy(v) for k, v in params.items()})


def part_state(est) -> dict:
    """A fitted sub-estimator as a nested state for its owner's file: class, version, settings, fitted state."""
    return {"class": type(est).__name__, "version": est._SAVE_VERSION, "params": est._saved_params(),
            "state": est._get_state()}


def part_from_state(cls, part: dict, device=None):
    """The sub-estimator written by :func:`part_state` (refused, as by ``load``, when of another class or version)."""
    if part.get("class") != cls.__name__ or part.get("version") != cls._SAVE_VERSION:
        raise ValueError(f"the file holds a {part.get('class')} part of version {part.get('version')} where a "
                         f"{cls.__name__} of version {cls._SAVE_VERSION} was expected: refit and save again")
    return _build(cls, part["params"], part["state"], device, {})
