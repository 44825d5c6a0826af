"""The step check of the stochastic Newton step: the line search's step length, checked on exactly
rescored points (candidate reuse certified against a full rescore) and halved while that helps."""

import pytest
import torch

from otgen.transport._newton import check_step, line_search
from otgen.transport._scoring import Scorer, candidate_best, score_margin


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
