"""Candidate reuse with an exactness certificate: the best cell at new heights from each point's k best
cells at old heights, checked against a full rescore of every point."""

import math

import pytest
import torch

from otgen.transport._scoring import Scorer, candidate_best, certify_candidates, score_margin


@pytest.fixture
def scored():
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(500, 16, generator=g)
    X = torch.rand(20000, 16, generator=g) * 2 - 1
    h = 0.5 * torch.randn(500, generator=g)
    scorer = Scorer(Y, 1 << 24)
    vals, idx = scorer.topk(X, h, 6)
    return scorer, X, h, vals, idx, g


def _full(scorer, X, h):
    """Best cell of a full rescore and whether its lead over the runner-up exceeds the rounding margin."""
    v, i = scorer.topk(X, h, 2)
    return i[:, 0], v[:, 0] - v[:, 1] > scorer.margin(X, h.abs())


@pytest.mark.parametrize("step", [0.0, 0.01, 0.1, 1.0])
def test_candidates_give_the_full_rescores_cells(scored, step):
    scorer, X, h, vals, idx, g = scored
    h_new = h + step * torch.randn(500, generator=g)
    v, best, n_redo = scorer.best_from_candidates(X, h_new, vals, idx, h)
    full, clear = _full(scorer, X, h_new)
    assert torch.equal(best[clear], full[clear])          # every point whose answer is not a rounding tie
    assert (~clear).float().mean() < 0.01                 # (there are few)
    if step <= 0.01:
        assert n_redo < 0.05 * len(X)                     # small steps: the candidates answer nearly every point
    if step >= 1.0:
        assert n_redo > 0.2 * len(X)                      # large steps break many certificates


def test_a_cell_outside_the_candidates_that_wins_breaks_the_certificate(scored):
    scorer, X, h, vals, idx, _ = scored
    j = 123
    outside = ~(idx == j).any(1)
    h_new = h.clone()
    h_new[j] += 50.0                                       # cell j now wins everywhere
    v, best, n_redo = scorer.best_from_candidates(X, h_new, vals, idx, h)
    assert (best == j).all() and n_redo >= int(outside.sum())
    _, _, ok = certify_candidates(vals, idx, h_new - h, 0.0)
    assert not ok[outside].any()                          # no point without j among its candidates is certified


def test_the_certificate_needs_a_lead_over_the_runner_up():
    vals = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.9999, 1.0]])
    idx = torch.tensor([[0, 1, 2], [0, 1, 2]])
    dh = torch.zeros(4)
    _, best, ok = certify_candidates(vals, idx, dh, margin=1e-3)
    assert ok.tolist() == [True, False] and best.tolist() == [0, 0]
    dh[3] = 1.5                                            # cell 3 (no candidate) could now reach 1 + 1.5 < 3
    assert certify_candidates(vals, idx, dh, margin=1e-3)[2].tolist() == [True, False]
    dh[3] = 2.5                                            # ... or 3.5 > 3: not certain any more
    assert certify_candidates(vals, idx, dh, margin=1e-3)[2].tolist() == [False, False]


def test_candidate_best_with_a_column_chunked_rescore_gives_the_full_rescores_cells(scored):
    scorer, X, h, vals, idx, g = scored
    chunked = Scorer(scorer.Yt.T.contiguous(), 64 * 4 * 16)     # another scorer, in column chunks of 256
    assert chunked.col_chunk < scorer.N
    h_new = h + 0.3 * torch.randn(500, generator=g)
    margin = score_margin(X, scorer.Yt.T, torch.maximum(h.abs(), h_new.abs()))
    assert margin == scorer.margin(X, torch.maximum(h.abs(), h_new.abs()))
    _, best, n_redo = candidate_best(chunked.best, X, h_new, vals, idx, h, margin)
    full, clear = _full(scorer, X, h_new)
    assert 0 < n_redo < len(X) and torch.equal(best[clear], full[clear])


@pytest.mark.parametrize("max_memory", [1 << 24, 1 << 12])     # one block; column chunks
def test_group_topk_is_the_brute_force_group_ranking(max_memory):
    """The k best groups' scores and best cells against the full score matrix."""
    g = torch.Generator().manual_seed(3)
    N, K, k = 300, 7, 4
    Y, X, h = torch.randn(N, 5, generator=g), torch.randn(500, 5, generator=g), torch.randn(N, generator=g)
    group = torch.randint(K, (N,), generator=g)
    vals, cells = Scorer(Y, max_memory).group_topk(X, h, group, K, k)          # (500, k) each
    S = X @ Y.T + h
    best = torch.stack([S.masked_fill(group != c, -math.inf).max(1).values for c in range(K)], 1)   # (500, K)
    assert torch.allclose(vals, best.topk(k, dim=1).values)
    assert torch.allclose(S.gather(1, cells), vals) and bool((group[cells] == best.topk(k, dim=1).indices).all())
