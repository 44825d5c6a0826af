"""Save / load for the torch-backed estimators (autoencoder, classifier).

Both keep their constructor settings in ``_SETTINGS``, the fitted network in
``model_`` and the training log in ``history_``; the file holds exactly those.
"""

from __future__ import annotations

import os

import torch

from otgen._validation import resolve_device


def save_estimator(est, path) -> None:
    """Write ``est``'s settings, weights (on the CPU) and history to ``path``."""
    est._check_fitted()
    state = {"settings": {k: getattr(est, k) for k in est._SETTINGS},
             "state_dict": {k: v.cpu() for k, v in est.model_.state_dict().items()},
             "history": est.history_}
    torch.save(state, os.fspath(path))


def load_estimator(cls, path, build, device=None, verbose: bool = True):
    """Rebuild a ``cls`` written by :func:`save_estimator`; ``build(est)`` makes the empty network."""
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a {cls.__name__} file written by save()")
    est = cls(**state["settings"], device=device, verbose=verbose)
    model = build(est)
    model.load_state_dict(state["state_dict"])
    est.model_ = model.to(resolve_device(device)).eval()
    est.history_ = state["history"]
    return est
