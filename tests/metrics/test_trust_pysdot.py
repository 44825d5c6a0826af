"""Trust check: the exact 2-D power diagram (``otgen.transport.power2d``) against ``pysdot``.

pysdot (Q. Mérigot, H. Leclerc et al.; C++ ``sdot`` with a Python face) computes Laguerre cells
:math:`\\arg\\min_i |x - y_i|^2 - w_i` by its own geometry; otgen's cells are
:math:`\\arg\\max_i \\langle x, y_i\\rangle + h_i`, the same cells for :math:`w_i = |y_i|^2 + 2 h_i`.
Compared: the cell areas, the mass Jacobian (from otgen's facet lengths; pysdot differentiates in
:math:`w`, so :math:`\\partial / \\partial h = 2\\,\\partial / \\partial w`), and the heights of the
semi-discrete OT solution (otgen's damped Newton against pysdot's own Newton solver).

pysdot's latest release builds from source by cloning ``sdot`` from GitHub; where that is not possible,
pysdot 0.2.16 has a binary wheel for CPython 3.11 (``pip install pysdot==0.2.16``). Its Python code
passes ``np.uint64(-1)`` as the default ``cut_id``, which numpy 2 refuses, so the domain is built
with an explicit ``cut_id``.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from otgen.transport import power2d

pysdot = pytest.importorskip("pysdot")
domain_types = pytest.importorskip("pysdot.domain_types")

# "No cut id" in sdot: the largest uint64, what pysdot's default -1 means.
NO_CUT_ID = 2**64 - 1
HALF_WIDTH = 1.0                      # the domain [-1, 1]^2, otgen's square_domain()


def _pysdot_square():
    dom = domain_types.ConvexPolyhedraAssembly()
    dom.add_box([-HALF_WIDTH, -HALF_WIDTH], [HALF_WIDTH, HALF_WIDTH], cut_id=NO_CUT_ID)
    return dom


def _laguerre_weights(Y, h):
    return np.sum(Y ** 2, axis=1) + 2 * h


@pytest.fixture(params=[(7, 0.0), (40, 0.01), (200, 0.002)], ids=lambda p: f"n{p[0]}-h{p[1]}")
def diagram(request):
    """Targets inside the square with small random heights (some cells may be empty at larger scales)."""
    n, scale = request.param
    rng = np.random.default_rng(n)
    Y = rng.uniform(-0.9, 0.9, (n, 2))
    return Y, scale * rng.standard_normal(n)


def test_cell_areas_match_pysdot(diagram):
    Y, h = diagram
    ref = pysdot.PowerDiagram(Y, _laguerre_weights(Y, h), _pysdot_square()).integrals()
    ours = power2d.cell_areas(Y, h, power2d.square_domain(HALF_WIDTH))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13)
    assert ours.sum() == pytest.approx(4.0, abs=1e-12)


def test_mass_jacobian_from_facets_matches_pysdot(diagram):
    Y, h = diagram
    n = len(Y)
    mvs = pysdot.PowerDiagram(Y, _laguerre_weights(Y, h), _pysdot_square()).der_integrals_wrt_weights()
    ref = sp.csr_matrix((mvs.m_values, mvs.m_columns, mvs.m_offsets), shape=(n, n)).toarray()
    pairs, _, lengths = power2d.power_facets(Y, h)
    i, j = pairs.T
    off = np.zeros((n, n))
    off[i, j] = off[j, i] = lengths / np.linalg.norm(Y[i] - Y[j], axis=1)   # d|W_i| / dh_j = -|facet| / |y_i - y_j|
    d_areas_dh = -off + np.diag(off.sum(1))
    np.testing.assert_allclose(d_areas_dh, 2 * ref, rtol=0, atol=1e-11)


def test_newton_heights_match_pysdot_optimal_transport():
    rng = np.random.default_rng(5)
    n = 60
    Y = rng.uniform(-0.9, 0.9, (n, 2))
    nu = rng.uniform(0.5, 1.5, n)
    nu /= nu.sum()
    ours = power2d.solve_power2d(Y, weights=nu, tol=1e-12)
    solver = pysdot.OptimalTransport(Y, domain=_pysdot_square(), masses=4.0 * nu, obj_max_dm=1e-13)
    solver.adjust_weights(initial_weights=np.zeros(n))          # w = 0: the Voronoi diagram, no empty cell
    h_ref = (solver.get_weights() - np.sum(Y ** 2, axis=1)) / 2
    assert ours.converged
    np.testing.assert_allclose(ours.heights, h_ref - h_ref.mean(), rtol=0, atol=1e-10)
