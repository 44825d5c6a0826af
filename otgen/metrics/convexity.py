r"""How far a map is from the gradient of a convex function: shape-constrained convex regression.

By Brenier's theorem the quadratic-cost optimal transport map between two measures (the
first absolutely continuous) is the gradient of a convex function, and by Rockafellar's
theorem a finite set of pairs :math:`(x_i, t_i)` lies on the (sub)gradient of a convex
function exactly when it is cyclically monotone. :func:`convex_map_residual` measures the
distance of given pairs from that set: the closest gradients :math:`g_i` that some convex
function can have at the :math:`x_i`,

.. math::

    \min_{f \in \mathbb{R}^n,\ g \in \mathbb{R}^{n \times d}} \sum_{i=1}^n \|g_i - t_i\|^2
    \quad \text{s.t.} \quad f_j \ge f_i + \langle g_i, x_j - x_i\rangle \quad \forall i \ne j,

a quadratic program in :math:`n(d+1)` variables with :math:`n(n-1)` linear constraints
(shape-constrained convex regression [1]_, [2]_), solved with cvxpy [3]_. The constraints
say that the affine functions :math:`f_i + \langle g_i, \cdot - x_i\rangle` all lie below
the values :math:`f_j`, i.e. that :math:`f` interpolates a convex function whose
subgradient at :math:`x_i` is :math:`g_i`.

An optimal-transport map (otgen's :class:`~otgen.transport.SemiDiscreteOT`, the gradient
of :math:`u_h(x) = \max_i \langle x, y_i\rangle + h_i`) gives a residual at the solver's
tolerance; a deterministic diffusion sampler's noise-to-code map (DDIM, the probability-flow
ODE) need not be an optimal-transport map [4]_, and the residual says by how much it is not.

cvxpy is an optional dependency (``pip install "otgen[cvxpy]"``): nothing on a default path
of otgen calls this module.

References
----------
.. [1] E. Seijo, B. Sen, "Nonparametric least squares estimation of a multivariate convex
   regression function", Ann. Statist. 39(3), 2011.
.. [2] S. Boyd, L. Vandenberghe, "Convex Optimization", Cambridge University Press, 2004,
   section 6.5.5 (fitting convex functions to data).
.. [3] S. Diamond, S. Boyd, "CVXPY: a Python-embedded modeling language for convex
   optimization", JMLR 17(83), 2016.
.. [4] H. Lavenant, F. Santambrogio, "The flow map of the Fokker-Planck equation does not
   provide optimal transport", Appl. Math. Lett. 133, 2022.
"""

from __future__ import annotations

import numpy as np
import torch

from otgen._validation import as_tensor

try:                                    # optional extra: pip install "otgen[cvxpy]"
    import cvxpy as cp
except ModuleNotFoundError:             # pragma: no cover - exercised by monkeypatching in the tests
    cp = None

__all__ = ["convex_map_residual"]

# Statuses of a solve whose point is usable; anything else (infeasible, unbounded, error) raises.
_SOLVED = ("optimal", "optimal_inaccurate")


def _standardise(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``a = mean + scale * u`` with one scalar scale (a per-coordinate scale would change the problem)."""
    mean = a.mean(axis=0)
    scale = float(np.sqrt(((a - mean) ** 2).sum(axis=1).mean()))
    return (a - mean) / (scale if scale > 0 else 1.0), mean, scale if scale > 0 else 1.0


def _convex_regression(u: np.ndarray, v: np.ndarray, solver) -> tuple[np.ndarray, np.ndarray]:
    """Values f (n,) and gradients g (n, d) of the closest convex fit to the pairs (u_i, v_i)."""
    n, d = u.shape
    f, g = cp.Variable(n), cp.Variable((n, d))
    ones = np.ones((n, 1))
    # gap[j, i] = f_j - f_i - <g_i, u_j - u_i>; the diagonal is 0 by construction
    inner = u @ g.T                                                     # inner[j, i] = <u_j, g_i>
    own = cp.reshape(cp.sum(cp.multiply(u, g), axis=1), (1, n), order="C")   # <u_i, g_i> as a row
    gap = (cp.reshape(f, (n, 1), order="C") @ ones.T - ones @ cp.reshape(f, (1, n), order="C")
           - inner + ones @ own)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(g - v)), [gap >= 0])
    problem.solve(solver=solver)
    if problem.status not in _SOLVED:
        raise RuntimeError(f"the convex-regression QP was not solved: cvxpy status {problem.status!r}")
    return np.asarray(f.value, dtype=np.float64), np.asarray(g.value, dtype=np.float64)


def convex_map_residual(x, t, *, solver: str = "CLARABEL", return_fit: bool = False):
    r"""Relative distance of the pairs :math:`(x_i, t_i)` from the gradient of a convex function.

    Solves the convex-regression QP of the module docstring and returns

    .. math::

        r = \left(\frac{\sum_i \|g_i^\star - t_i\|^2}{\sum_i \|t_i - \bar t\|^2}\right)^{1/2}
        \in [0, 1],

    with :math:`g^\star` the closest gradients of a convex function and :math:`\bar t` the mean
    of the :math:`t_i`. :math:`r = 0` exactly when the pairs are cyclically monotone (some convex
    function has gradient :math:`t_i` at every :math:`x_i`); :math:`r \le 1` because the constant
    gradients :math:`g_i = \bar t` (an affine function) are always feasible, so :math:`r = 1` means
    that no convex function does better than a constant map. :math:`r` does not change when
    :math:`x` is moved and scaled by a positive scalar, nor when :math:`t` is. The problem is solved
    after both are centred and scaled that way; the fit is returned in the original units.

    On a finite sample :math:`r` is a lower bound on how far the map is from a gradient: a map
    that is no gradient can be cyclically monotone on few points (on 40 Gaussian points in the
    plane, :math:`x \mapsto (cI + S)x` with :math:`S` a rotation by 90 degrees gives
    :math:`r \approx 0.87, 0.36, 0.10, 0` for :math:`c = 0, 1, 2, 4`), and :math:`r` grows with
    the number of points.

    Cost: :math:`n(n-1)` constraints; with Clarabel on one CPU core, 100 points in 2-D take about
    a second and 200 points in 8-D about ten; the time grows faster than :math:`n^2`.

    Parameters
    ----------
    x : array_like, shape (n, d), n >= 2
        Points (e.g. noise vectors).
    t : array_like, shape (n, d)
        Their images under the map (e.g. the codes a sampler maps the noise to).
    solver : str, default "CLARABEL"
        A cvxpy solver name for a QP. Clarabel (an interior-point solver that ships with cvxpy)
        reaches residuals of ~1e-10 on exactly convex data; ``"OSQP"`` (first order) stops near
        1e-6 and may warn that the solution is inaccurate.
    return_fit : bool, default False
        Also return the fit.

    Returns
    -------
    residual : float
        :math:`r` above.
    fit : dict
        Only with ``return_fit=True``: ``"values"`` (ndarray (n,), the convex function's values
        :math:`f_i` at the :math:`x_i`) and ``"gradients"`` (ndarray (n, d), :math:`g_i^\star`).

    Raises
    ------
    ModuleNotFoundError
        cvxpy is not installed.
    ValueError
        Shapes that differ, fewer than two points, or non-finite values.
    RuntimeError
        The solver did not return a solution.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 2))
    >>> round(convex_map_residual(x, 2 * x + 1), 4)           # gradient of |x|^2 + <1, x>
    0.0
    >>> convex_map_residual(x, x[:, ::-1] * [1, -1]) > 0.5    # rotation by 90 degrees
    True
    """
    if cp is None:
        raise ModuleNotFoundError("convex_map_residual solves a QP with cvxpy, an optional dependency: "
                                  "pip install 'otgen[cvxpy]' (or pip install cvxpy)")
    xs = as_tensor(x, "x", ndim=2, dtype=torch.float64, min_rows=2).cpu().numpy()
    ts = as_tensor(t, "t", ndim=2, dtype=torch.float64, min_rows=2).cpu().numpy()
    if xs.shape != ts.shape:
        raise ValueError(f"x and t must have the same shape (n, d), got {xs.shape} and {ts.shape}")
    u, x_mean, x_scale = _standardise(xs)
    v, t_mean, t_scale = _standardise(ts)
    f, g = _convex_regression(u, v, solver)
    total = float((v ** 2).sum())
    residual = float(np.sqrt(((g - v) ** 2).sum() / total)) if total > 0 else 0.0
    if not return_fit:
        return residual
    values = t_scale * x_scale * f + xs @ t_mean          # f_i = s_t s_x f'_i + <t_mean, x_i>
    return residual, {"values": values, "gradients": t_scale * g + t_mean}
