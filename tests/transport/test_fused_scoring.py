"""The fused score + top-k kernel (otgen/transport/_fused.c) against the torch Scorer path."""

import pytest
import torch

from otgen.transport import _fused
from otgen.transport._scoring import Scorer

pytestmark = pytest.mark.skipif(_fused.library() is None,
                                reason=f"fused kernel unavailable: {_fused.unavailable_reason()}")

MAX_MEMORY = 1 << 22       # small blocks: the torch path runs with several row and column chunks
VALUE_TOL = 1e-5           # relative to the largest |score| term: both paths round each score within (d + 2) eps


def _problem(N, d, M, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(M, d, generator=g) * 2 - 1, torch.randn(N, d, generator=g),
            0.5 * torch.randn(N, generator=g))


def _exact(X, Y, h, idx):
    """float64 scores of the rows of X at the cells idx (m,) or (m, k)."""
    Xd, Yd, hd = X.double(), Y.double(), h.double()
    if idx.dim() == 1:
        return (Xd * Yd[idx]).sum(1) + hd[idx]
    return (Xd[:, None, :] * Yd[idx]).sum(2) + hd[idx]


def _scale(X, Y, h):
    return float(X.abs().max()) * float(Y.abs().sum(1).max()) + float(h.abs().max())


SHAPES = [(10000, 16, 3000), (1000, 17, 1001), (37, 5, 13), (16, 8, 4), (17, 3, 129), (2, 1, 50),
          (300, 64, 257), (5000, 32, 2048)]


@pytest.mark.parametrize("N,d,M", SHAPES)
def test_fused_best_and_top2_equal_the_torch_path(N, d, M):
    X, Y, h = _problem(N, d, M)
    fused, torch_path = Scorer(Y, MAX_MEMORY), Scorer(Y, MAX_MEMORY, fused=False)
    tol = VALUE_TOL * _scale(X, Y, h)
    v, i = fused.best(X, h)
    vt, it = torch_path.best(X, h)
    assert i.dtype == torch.int64 and v.dtype == torch.float32 and i.shape == (M,)
    assert (v - vt).abs().max() <= tol
    # the cells agree except at rounding ties, whose exact scores are equal to within tol
    diff = i != it
    assert ((_exact(X, Y, h, i) - _exact(X, Y, h, it))[diff].abs() <= tol).all()
    v2, i2 = fused.topk(X, h, 2)
    v2t, i2t = torch_path.topk(X, h, 2)
    assert v2.shape == (M, 2) and i2.shape == (M, 2)
    assert (v2 - v2t).abs().max() <= tol
    assert (v2[:, 0] >= v2[:, 1]).all() and (i2[:, 0] != i2[:, 1]).all()
    assert ((_exact(X, Y, h, i2) - v2.double()).abs() <= tol).all()    # each value is its cell's score
    assert torch.equal(i2[:, 0], i)


@pytest.mark.parametrize("N,d,M", SHAPES[:4] + SHAPES[6:])
@pytest.mark.parametrize("k", [3, 6, 16])
def test_fused_topk_equals_the_torch_path(N, d, M, k):
    """The line search's k best cells: the same values, each its cell's score, descending, distinct cells."""
    X, Y, h = _problem(N, d, M, seed=k)
    fused, torch_path = Scorer(Y, MAX_MEMORY), Scorer(Y, MAX_MEMORY, fused=False)
    tol = VALUE_TOL * _scale(X, Y, h)
    v, i = fused.topk(X, h, k)
    vt, it = torch_path.topk(X, h, k)
    kk = min(k, N)
    assert v.shape == (M, kk) and i.shape == (M, kk) and i.dtype == torch.int64
    assert (v - vt).abs().max() <= tol
    assert (v[:, :-1] >= v[:, 1:]).all()
    assert (i.sort(1).values.diff(dim=1) > 0).all()                      # k distinct cells per row
    assert ((_exact(X, Y, h, i) - v.double()).abs() <= tol).all()
    # the same sets of cells except at rounding ties (exact scores equal to within tol)
    diff = i != it
    assert ((_exact(X, Y, h, i) - _exact(X, Y, h, it))[diff].abs() <= tol).all()
    assert torch.equal(i[:, 0], fused.best(X, h)[1])


def test_ties_give_maximal_cells():
    """Duplicate targets at equal heights: every returned value is the row's best (resp. second) score."""
    X, Y, h = _problem(40, 6, 500, seed=1)
    Y = torch.cat([Y, Y, Y[:5]])                       # each of the first 5 targets three times
    h = torch.cat([h, h, h[:5]])
    fused, torch_path = Scorer(Y, MAX_MEMORY), Scorer(Y, MAX_MEMORY, fused=False)
    v, i = fused.best(X, h)
    vt, _ = torch_path.best(X, h)
    tol = VALUE_TOL * _scale(X, Y, h)
    assert (v - vt).abs().max() <= tol
    v2, i2 = fused.topk(X, h, 2)
    v2t, _ = torch_path.topk(X, h, 2)
    assert (v2 - v2t).abs().max() <= tol
    assert (v2[:, 0] - v2[:, 1]).abs().max() <= tol    # the best cell's twin is the runner-up
    assert (i2[:, 0] != i2[:, 1]).all()
    assert ((_exact(X, Y, h, i2) - v2.double()).abs() <= tol).all()
    # exact ties inside the kernel (all scores equal): the first index wins
    Z = torch.zeros(20, 4)
    vz, iz = _fused.fused_score(torch.ones(7, 4), _fused.pack_targets(Z), _fused.pad_heights(torch.zeros(20), 2), 2)
    assert (iz[:, 0] == 0).all() and (iz[:, 1] == 1).all() and (vz == 0).all()
    vz, iz = _fused.fused_score(torch.ones(7, 4), _fused.pack_targets(Z), _fused.pad_heights(torch.zeros(20), 2), 6)
    assert torch.equal(iz, torch.arange(6).expand(7, 6)) and (vz == 0).all()
    # equal best scores of a duplicated target: the first copy leads, the second follows
    v6, i6 = fused.topk(X, h, 6)
    twin = i6[:, 0] < 5
    assert twin.any() and torch.equal(i6[twin, 1], i6[twin, 0] + 40) and torch.equal(i6[twin, 2], i6[twin, 0] + 80)
    assert torch.equal(v6[twin, 0], v6[twin, 2])


def test_threads_and_small_inputs():
    X, Y, h = _problem(100, 9, 1000, seed=2)
    P, hp = _fused.pack_targets(Y), _fused.pad_heights(h, -(-100 // _fused.TILE_T))
    one = _fused.fused_score(X, P, hp, 2, n_threads=1)
    many = _fused.fused_score(X, P, hp, 2, n_threads=4)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    v, i = _fused.fused_score(X[:0], P, hp, 1)
    assert v.shape == (0,) and i.shape == (0,)
    s = Scorer(Y[:1], MAX_MEMORY)                    # one target: top-k clamps k to 1
    v1, i1 = s.topk(X, h[:1], 2)
    assert i1.shape == (1000, 1) and (i1 == 0).all()


def test_fallbacks(monkeypatch):
    X, Y, h = _problem(50, 4, 100, seed=3)
    ref = Scorer(Y, MAX_MEMORY, fused=False).topk(X, h, 6)
    assert Scorer(Y, MAX_MEMORY)._fused_pass(X, h, _fused.TOPK_MAX + 1) is None   # k > TOPK_MAX: the torch path
    assert Scorer(Y, MAX_MEMORY).topk(X, h, _fused.TOPK_MAX + 1)[1].shape == (100, _fused.TOPK_MAX + 1)
    v, i = Scorer(Y.double(), MAX_MEMORY).best(X.double(), h.double())      # float64: the torch path
    assert v.dtype == torch.float64 and torch.equal(i, ref[1][:, 0])
    monkeypatch.setenv("OTGEN_FUSED", "0")
    assert _fused.library() is None and "OTGEN_FUSED" in _fused.unavailable_reason()
    s = Scorer(Y, MAX_MEMORY)
    assert s._fused_pass(X, h, 1) is None
    assert torch.equal(s.best(X, h)[1], ref[1][:, 0])
    with pytest.raises(_fused.FusedUnavailable):
        _fused.fused_score(X, _fused.pack_targets(Y), _fused.pad_heights(h, 4), 1)


def test_no_compiler_falls_back(monkeypatch, tmp_path):
    """Without a compiler (and an empty cache) loading fails with a reason and the Scorer uses torch."""
    monkeypatch.setattr(_fused, "_state", {})
    monkeypatch.setattr(_fused, "_compiler", lambda: None)
    assert _fused.library() is None and "compiler" in _fused.unavailable_reason()
    X, Y, h = _problem(50, 4, 100, seed=4)
    assert torch.equal(Scorer(Y, MAX_MEMORY).best(X, h)[1], Scorer(Y, MAX_MEMORY, fused=False).best(X, h)[1])
    monkeypatch.setattr(_fused, "_compiler", lambda: "/bin/false")           # a "compiler" that fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_fused, "_state", {})
    assert _fused.library() is None and _fused.unavailable_reason()
