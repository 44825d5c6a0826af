"""A solver fit under a wall-clock budget, shared by the solver benchmarks.

``fit_within`` runs ``SemiDiscreteOT.fit`` with the benchmark's own per-iteration callback and
stops it at the first iteration that ends past the budget: the benchmark then evaluates the
last heights it saw, so a stalled fit still gives a measured TV instead of running forever.
"""

import time
import warnings


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
