"""A solver fit under a wall-clock budget, shared by the solver benchmarks.

``fit_within`` runs ``SemiDiscreteOT.fit`` with the benchmark's own per-iteration callback and
stops it at the first iteration that ends past the budget: the benchmark then evaluates the
last heights it saw, so a stalled fit still gives a measured TV instead of running forever.
"""

import time
import warnings

import otgen.transport.semidiscrete as semidiscrete
from otgen.transport import SemiDiscreteOT


class _Stop(Exception):
    """The fit ran past its budget."""


def fit_within(sd, Y, weights=None, *, callback, max_seconds, start=None, record_warnings=False):
    """``sd.fit(Y, weights)`` with ``callback(it, h, info)`` each iteration, stopped past ``max_seconds``.

    ``start`` (a ``time.perf_counter()`` value, default now) is when the budget began. The solver's
    warnings are recorded (``record_warnings=True``) or silenced. Returns ``(stopped, warnings)``;
    any other exception of the fit propagates.
    """
    start = time.perf_counter() if start is None else start

    def checked(it, h, info):
        callback(it, h, info)
        if time.perf_counter() - start > max_seconds:
            raise _Stop

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always" if record_warnings else "ignore")
        try:
            sd.fit(Y, weights, callback=checked)
        except _Stop:
            return True, list(caught)
    return False, list(caught)


def fit_with_constants(Y, tol, constants, max_seconds):
    """A default ``SemiDiscreteOT(tol=tol, seed=0)`` fit with the solver module's private ``constants``
    (name -> value) set for its duration, under a ``max_seconds`` budget.

    Returns ``(sd, record, heights)``: ``record`` has ``fit_s``, ``stopped_at_budget``, ``converged``,
    ``iterations``, ``rejected``, ``points`` (all points scored), ``last_M``, ``history`` (the
    callback's info per iteration); ``heights`` are the last accepted ones when stopped.
    """
    saved = {k: getattr(semidiscrete, k) for k in constants}
    entries, snaps = [], []
    t0 = time.perf_counter()

    def cb(it, h, info):
        entries.append(dict(info))
        if info["accepted"]:
            snaps.append(h.clone())

    sd = SemiDiscreteOT(tol=tol, seed=0, max_iter=200)
    try:
        for k, v in constants.items():
            setattr(semidiscrete, k, v)
        stopped, _ = fit_within(sd, Y, callback=cb, max_seconds=max_seconds, start=t0)
    finally:
        for k, v in saved.items():
            setattr(semidiscrete, k, v)
    record = dict(fit_s=time.perf_counter() - t0, stopped_at_budget=stopped,
                  converged=bool(getattr(sd, "converged_", False)) and not stopped, iterations=len(entries),
                  rejected=sum(not e["accepted"] for e in entries), points=sum(e["n_samples"] for e in entries),
                  last_M=entries[-1]["n_samples"], history=entries)
    return sd, record, (snaps[-1] if stopped else sd.heights_)
