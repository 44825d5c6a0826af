"""One cache of fitted estimators for every experiment, keyed by settings and code version.

An entry is ``<kind>-<key>.pt`` (the estimator's own :meth:`save` file) beside
``<kind>-<key>.json`` (what it was fitted with, and how long the fit took). The key
hashes the settings that determine the fit *and* the code version: the source of
every library module that can change a fitted model (all of ``otgen`` but the
figures and the command line). So an entry can never go stale: change the code or a
setting, and the entry is fitted anew. Files are written atomically (the ``.json``
last), so an interrupted fit leaves no entry that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import otgen
from otgen.experiments._common import jsonable, write_text

__all__ = ["Cache", "code_version"]

KEY_DIGITS = 12              # hex digits of the settings hash in a file name: collisions are negligible
_NOT_FITTING_CODE = ("figures", "cli.py", "__main__.py")     # drawing and parsing never change a fitted model


def code_version() -> str:
    """SHA-1 (12 hex digits) of the source of every otgen module that can change a fitted model."""
    root = Path(otgen.__file__).parent
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(_NOT_FITTING_CODE):
            continue
        h.update(rel.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:KEY_DIGITS]


class Cache:
    """Fitted estimators on disk; ``folder=None`` keeps nothing (every call fits).

    Parameters
    ----------
    folder : str or os.PathLike or None
    """

    def __init__(self, folder=None):
        if folder is not None and not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"the cache folder must be a path or None, got {type(folder).__name__}")
        self.folder = None if folder is None else os.fspath(folder)
        self.version = code_version()
        self.hits, self.seconds = {}, {}

    def key(self, settings: dict) -> str:
        blob = json.dumps(jsonable(dict(settings, code_version=self.version)), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:KEY_DIGITS]

    def get_or_fit(self, kind: str, settings: dict, fit, cls, device=None, verbose: bool | None = None):
        """The estimator ``kind`` fitted with ``settings``: loaded (``cls.load``) or ``fit()`` and stored.

        Records ``hits[kind]`` (loaded?) and ``seconds[kind]`` (the fit's time, stored with the entry).
        ``verbose`` (when not None) replaces a loaded estimator's own ``verbose`` setting: the run that
        fitted it chose to show progress bars, not this one.
        """
        stem = None if self.folder is None else os.path.join(self.folder, f"{kind}-{self.key(settings)}")
        if stem is not None and os.path.exists(stem + ".pt") and os.path.exists(stem + ".json"):
            with open(stem + ".json") as f:
                meta = json.load(f)
            self.hits[kind], self.seconds[kind] = True, float(meta.get("fit_seconds") or float("nan"))
            est = cls.load(stem + ".pt", device=device)
            if verbose is not None and "verbose" in est.get_params():
                est.set_params(verbose=verbose)
            return est
        t0 = time.perf_counter()
        est = fit()
        self.hits[kind], self.seconds[kind] = False, time.perf_counter() - t0
        if stem is not None:
            os.makedirs(self.folder, exist_ok=True)
            est.save(stem + ".pt")
            write_text(stem + ".json", json.dumps(jsonable(dict(kind=kind, settings=settings, code_version=self.version,
                                                                fit_seconds=self.seconds[kind])), indent=2))
        return est
