"""The stochastic Newton step: the step check (the line search's step length, checked on exactly
rescored points -- candidate reuse certified against a full rescore -- and halved while that helps),
and the sampled Hessian against the exact Laplacian of a 2-D power diagram."""

import numpy as np
import pytest
import torch

from otgen.transport import power2d, semidiscrete
from otgen.transport._newton import (Laplacian, check_step, dead_cells, estimate_laplacian, group_laplacian,
                                    line_search, lm_step, strong_groups)
from otgen.transport._scoring import Scorer, candidate_best, score_margin
from otgen.transport.sources import SourceSampler


@pytest.fixture
def problem():
    """Targets, points, heights and their top-6 candidates, with an overshooting direction."""
    g = torch.Generator().manual_seed(1)
    N = 300
    Y = torch.randn(N, 8, generator=g)
    X = torch.rand(40000, 8, generator=g) * 2 - 1
    h = torch.zeros(N)
    scorer = Scorer(Y, 1 << 24)
    vals, idx = scorer.topk(X, h, 6)
    w = torch.full((N,), 1.0 / N, dtype=torch.float64)
    grad = torch.bincount(idx[:, 0], minlength=N).double() / len(X) - w
    direction = -40.0 * grad / w      # a diagonal step far too long: cells from outside the candidates win
    return scorer, X, h, vals, idx, w, direction - direction.mean()


def _exact_tv(scorer, X, h, step, w):
    cells = scorer.best(X, (h.double() + step).float())[1]
    return 0.5 * float((torch.bincount(cells, minlength=len(w)).double() / len(X) - w).abs().sum())


def test_the_checked_cells_are_the_full_rescores(problem):
    scorer, X, h, vals, idx, w, direction = problem
    margin = score_margin(X, scorer.Yt.T, h.abs() + direction.abs().float())
    _, cells, n_redo = candidate_best(scorer.best, X, (h + direction).float(), vals, idx, h, margin)
    assert n_redo > 0
    assert torch.equal(cells, scorer.best(X, (h + direction).float())[1])


def test_check_step_halves_while_the_exact_error_falls(problem):
    scorer, X, h, vals, idx, w, direction = problem
    rescue = torch.zeros_like(direction)
    calls = []

    def cells(step):
        calls.append(step)
        return scorer.best(X, (h.double() + step).float())[1]

    a0 = line_search(vals, idx, direction, w)
    a = check_step(cells, idx[:, 0], direction, rescue, w, a0, 1 / 32, halvings=5)
    tv = {b: _exact_tv(scorer, X, h, b * direction, w) for b in (a, a / 2, a0)}
    assert a <= a0 and tv[a] <= tv[a0]
    assert a < a0                                  # this overshoot is caught: the prediction was wrong
    if a / 2 >= 1 / 32 and len(calls) <= 5:        # it stopped because halving no longer helped
        assert tv[a / 2] >= tv[a]


def test_check_step_respects_its_limits(problem):
    scorer, X, h, vals, idx, w, direction = problem
    rescue = torch.zeros_like(direction)
    n = []

    def cells(step):
        n.append(1)
        return scorer.best(X, (h.double() + step).float())[1]

    assert check_step(cells, idx[:, 0], direction, rescue, w, 1.0, 0.5, halvings=5) >= 0.5
    n.clear()
    a = check_step(cells, idx[:, 0], 10 * direction, rescue, w, 1.0, 1 / 1024, halvings=2)
    assert a >= 0.25 and len(n) <= 3


def test_check_step_keeps_a_good_step(problem):
    scorer, X, h, vals, idx, w, direction = problem
    small = direction / 400                        # short: the candidates predict it, halving only slows it
    a = check_step(lambda s: scorer.best(X, (h.double() + s).float())[1], idx[:, 0], small,
                   torch.zeros_like(small), w, 1.0, 1 / 32)
    assert a == 1.0


# ----------------------------------------------------------------------------- the Hessian estimate

def _voronoi_2d(N, seed):
    """Targets in the square and heights -|y|²/2 (the Voronoi diagram): exact facet weights from power2d."""
    rng = np.random.default_rng(seed)
    Y = rng.uniform(-0.9, 0.9, size=(N, 2))
    h = -0.5 * (Y ** 2).sum(1)
    pairs, _, lengths = power2d.power_facets(Y, h)
    w = lengths / (np.linalg.norm(Y[pairs[:, 0]] - Y[pairs[:, 1]], axis=1) * 4.0)   # uniform density 1/4
    return torch.tensor(Y), torch.tensor(h), {(int(a), int(b)): float(x) for (a, b), x in zip(pairs, w)}


@pytest.mark.parametrize("points_per_cell", [64, 1024])
def test_the_solvers_hessian_estimate_matches_the_exact_2d_laplacian(points_per_cell):
    """The sampled Laplacian with the solver's band (``_HESSIAN_BAND_FRACTION``, ``_HESSIAN_BAND_PER_CELL``)
    against the exact facet weights length / (|y_i - y_j| area) of a 2-D power diagram: the wider the band,
    the lower the variance and the larger the (downward) bias. At 64 points per cell (the solver's first
    iterations) a band of 5 % of the points is off by 58 % (summed over the facets: variance), one of 80 % by
    37 % (bias); 20-50 % by 16-21 %."""
    N = 200
    Y, h, exact = _voronoi_2d(N, 0)
    X = SourceSampler("uniform", 2, 0, qmc=True, dtype=torch.float64).draw(points_per_cell * N)
    v, i = Scorer(Y, 1 << 24).topk(X, h, 2)
    lap, _ = estimate_laplacian(i, v[:, 0] - v[:, 1], Y, band_fraction=semidiscrete._HESSIAN_BAND_FRACTION,
                                band_per_cell=semidiscrete._HESSIAN_BAND_PER_CELL)
    est = {(int(a), int(b)): float(x) for a, b, x in zip(lap.a, lap.b, lap.w)}
    total = sum(exact.values())
    assert abs(sum(est.values()) / total - 1) < 0.25                                  # the bias
    assert sum(abs(est.get(k, 0.0) - exact.get(k, 0.0)) for k in set(est) | set(exact)) / total < 0.3
    diag, diag_exact = lap.diag().numpy(), np.zeros(N)
    for (a, b), x in exact.items():
        diag_exact[a] += x
        diag_exact[b] += x
    assert np.median(np.abs(diag / diag_exact - 1)) < 0.25                            # every cell's own weight


def _shrinking_cell(w2):
    """1000 points in 3 cells; 100 sit in cell 2 with gaps 0.005..0.995 to cell 0, and the direction
    lowers cell 2 by 1: a step of length α moves the points with gap < α to cell 0."""
    gaps = 0.01 * torch.arange(100) + 0.005
    vals = torch.cat([torch.stack([torch.ones(100), 1 - gaps], 1), torch.tensor([[1.0, 0.0]]).expand(900, 2)])
    idx = torch.cat([torch.tensor([[2, 0]]).expand(100, 2), torch.tensor([[0, 1]]).expand(400, 2),
                     torch.tensor([[1, 0]]).expand(500, 2)])
    w = torch.tensor([(1 - w2) / 2, (1 - w2) / 2, w2], dtype=torch.float64)
    return vals, idx, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), w


def test_emptying_a_cell_too_small_to_be_seen_is_no_death():
    """A cell of mass 1e-6 should hold 0.001 of 1000 points: the full step, which empties it and
    gives every other cell its mass exactly, wins (weights spread over 1e7 stalled the solver
    when every empty cell counted as killed)."""
    vals, idx, direction, w = _shrinking_cell(1e-6)
    assert line_search(vals, idx, direction, w) == 1.0


def test_killing_a_visible_cell_ranks_behind():
    """The same step when the cell should hold 100 points: it kills the cell, so a shorter step wins."""
    vals, idx, direction, w = _shrinking_cell(0.1)
    assert line_search(vals, idx, direction, w) < 1.0
    counts = torch.tensor([0.0, 0.0, 3.0, 0.0], dtype=torch.float64)
    assert dead_cells(counts, torch.tensor([0.5, 0.004, 0.4, 0.096], dtype=torch.float64), 1000).tolist() == \
        [True, False, False, True]               # expected 500, 4 (< 5: not dead), -, 96 points


def _two_cliques(bridge):
    """Cells 0-4 and 5-9, every pair within a clique joined with weight 1, cells 4 and 5 by ``bridge``;
    cell 10 has no facet."""
    edges = [(i, j, 1.0) for c in (0, 5) for i in range(c, c + 5) for j in range(i + 1, c + 5)] + [(4, 5, bridge)]
    a, b, w = (torch.tensor(x) for x in zip(*edges))
    return Laplacian(a, b, w.double(), 11)


def test_strong_groups_split_weakly_joined_clusters_only():
    labels, n = strong_groups(_two_cliques(1e-4), 3e-3)
    assert n == 2 and len(set(labels[:5].tolist())) == 1 and len(set(labels[5:10].tolist())) == 1
    assert labels[0] != labels[5] and labels[10] not in labels[:10]          # the lone cell is its own label
    labels, n = strong_groups(_two_cliques(0.1), 3e-3)
    assert n == 1 and len(set(labels[:10].tolist())) == 1


def test_group_laplacian_is_pt_l_p():
    """PᵀLP with P the (N, K) group indicator, as dense matrices."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(20, (60,), generator=g), torch.randint(20, (60,), generator=g)
    keep = a != b
    lap = Laplacian(a[keep], b[keep], torch.rand(int(keep.sum()), generator=g).double(), 20)
    groups = torch.randint(4, (20,), generator=g)

    def dense(L):
        M = torch.zeros(L.n, L.n, dtype=torch.float64)
        for i, j, w in zip(L.a.tolist(), L.b.tolist(), L.w.tolist()):
            M[i, j] -= w
            M[j, i] -= w
            M[i, i] += w
            M[j, j] += w
        return M

    P = torch.nn.functional.one_hot(groups, 4).double()
    assert torch.allclose(dense(group_laplacian(lap, groups, 4)), P.T @ dense(lap) @ P)


def test_a_grouped_step_leaves_each_groups_total_to_the_coarse_step():
    """With groups the step solves L Δ = -(g - ν Σ_G g / Σ_G ν): only the error within each group.
    Exactly solved (no regularisation to speak of), LΔ then sums to zero over every group."""
    lap = _two_cliques(1e-4)
    w = torch.full((11,), 1 / 11, dtype=torch.float64)
    grad = torch.linspace(-1, 1, 11, dtype=torch.float64) * 1e-2
    grad -= grad.mean()
    groups, _ = strong_groups(lap, 3e-3)
    d = lm_step(lap, grad, w, 1e-12, groups=groups, rtol=1e-12, max_cg=1000)
    moved = lap.matvec(d)
    for k in range(int(groups.max()) + 1):
        assert abs(float(moved[groups == k].sum())) < 1e-10
    plain = lm_step(lap, grad, w, 1e-12, rtol=1e-12, max_cg=1000)     # without groups the bridge carries mass
    assert abs(float(lap.matvec(plain)[:5].sum())) > 1e-3
