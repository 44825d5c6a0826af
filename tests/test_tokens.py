import itertools

import numpy as np
import pytest
import torch

from otgen.tokens import patchify, positional_embedding, token_grid, token_positions, unpatchify

SHAPES = [(1, 1, 4, 4), (4, 1, 8, 8), (8, 3, 16, 24), (2, 3, 6, 4), (12, 1, 16, 16)]
TUBELETS = [1, 2, 4, (1, 2, 2), (2, 2, 2), (4, 8, 8), (1, 4, 2), (2, 1, 4), (4, 2, 8)]


def _divides(shape, tub):
    t, p, q = (1, tub, tub) if isinstance(tub, int) else tub
    T, _, H, W = shape
    return T % t == 0 and H % p == 0 and W % q == 0


CASES = [(s, tb) for s, tb in itertools.product(SHAPES, TUBELETS) if _divides(s, tb)]


@pytest.mark.parametrize("shape, tubelet", CASES)
def test_round_trip_is_identity(shape, tubelet):
    T, C, H, W = shape
    x = torch.randn(2, *shape)
    tokens = patchify(x, tubelet)
    t, p, q = (1, tubelet, tubelet) if isinstance(tubelet, int) else tubelet
    nT, nH, nW = token_grid(shape, tubelet)
    assert (nT, nH, nW) == (T // t, H // p, W // q)
    assert tokens.shape == (2, nT * nH * nW, t * C * p * q)
    assert torch.equal(unpatchify(tokens, shape, tubelet), x)
    # and the other way round: every token layout is reachable
    z = torch.randn_like(tokens)
    assert torch.equal(patchify(unpatchify(z, shape, tubelet), tubelet), z)


def test_hand_checked_token_order():
    # T=2, C=2, H=2, W=4 with tubelet (2, 2, 2): 2 tokens (one frame block, one row block, two column blocks)
    x = torch.arange(2 * 2 * 2 * 4).reshape(1, 2, 2, 2, 4)        # value = ((t*C + c)*H + y)*W + x
    tok = patchify(x, (2, 2, 2))
    assert tok.shape == (1, 2, 16)
    # token 0 = columns 0..1, ordered (dt, c, dy, dx)
    expected0 = [((dt * 2 + c) * 2 + dy) * 4 + dx
                 for dt in range(2) for c in range(2) for dy in range(2) for dx in range(2)]
    assert tok[0, 0].tolist() == expected0
    assert tok[0, 1].tolist() == [v + 2 for v in expected0]        # columns 2..3
    # per-frame patches: tubelet int 2 -> (1, 2, 2) gives 2 frames * 1 * 2 = 4 tokens, frame-major
    tok1 = patchify(x, 2)
    assert tok1.shape == (1, 4, 8)
    assert tok1[0, 0, :4].tolist() == [0, 1, 4, 5]                 # frame 0, channel 0, top-left 2x2
    assert tok1[0, 1, :4].tolist() == [2, 3, 6, 7]                 # frame 0, second column block
    assert tok1[0, 2, :4].tolist() == [16, 17, 20, 21]             # frame 1, first column block


def test_positions_consistent_with_order():
    shape, tub = (8, 3, 16, 24), (4, 8, 8)
    nT, nH, nW = token_grid(shape, tub)
    pos = token_positions(shape, tub)
    assert pos.dtype == torch.long and pos.shape == (nT * nH * nW, 3)
    k = (pos[:, 0] * nH + pos[:, 1]) * nW + pos[:, 2]
    assert torch.equal(k, torch.arange(len(pos)))
    # a clip whose value encodes the block coordinates: each token is constant and equal to its position
    T, C, H, W = shape
    tt, yy, xx = torch.meshgrid(torch.arange(T) // 4, torch.arange(H) // 8, torch.arange(W) // 8, indexing="ij")
    code = ((tt * 100 + yy * 10 + xx)[:, None].expand(T, C, H, W)).float()[None]
    tok = patchify(code, tub)[0]
    assert torch.equal(tok.min(1).values, tok.max(1).values)
    assert torch.equal(tok[:, 0].long(), pos[:, 0] * 100 + pos[:, 1] * 10 + pos[:, 2])


def test_positional_embedding():
    shape, tub = (16, 1, 32, 32), (4, 8, 8)
    emb = positional_embedding(shape, tub, 48)
    assert emb.shape == (4 * 4 * 4, 48) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    d = torch.cdist(emb, emb)
    assert float(d[~torch.eye(len(emb), dtype=bool)].min()) > 1e-2        # all tokens distinct
    # factorised: the first third depends only on the frame block
    pos = token_positions(shape, tub)
    same_frame = pos[:, 0] == 0
    assert torch.allclose(emb[same_frame, :16], emb[0, :16].expand(int(same_frame.sum()), 16))
    np.testing.assert_allclose(emb[:, 0::2][:, :8].numpy(), np.sin(pos[:, :1].numpy() * 10000.0 ** (-np.arange(8) / 8)),
                               atol=1e-6)


def test_keeps_dtype_numpy_and_grad(device):
    x = np.arange(2 * 4 * 1 * 8 * 8, dtype=np.float64).reshape(2, 4, 1, 8, 8)
    tok = patchify(x, (2, 4, 4))
    assert tok.dtype == torch.float64
    xi = torch.arange(4 * 8 * 8, dtype=torch.int16, device=device).reshape(1, 4, 1, 8, 8)
    ti = patchify(xi, 4)
    assert ti.dtype == torch.int16 and ti.device.type == torch.device(device).type
    assert torch.equal(unpatchify(ti, (4, 1, 8, 8), 4), xi)
    xg = torch.randn(1, 4, 2, 8, 8, device=device, requires_grad=True)
    (patchify(xg, (2, 4, 4)) ** 2).sum().backward()
    assert torch.allclose(xg.grad, 2 * xg.detach())


def test_errors():
    x = torch.zeros(1, 6, 1, 8, 8)
    with pytest.raises(ValueError, match=r"T \(frames\) = 6 is not divisible by the tubelet size 4"):
        patchify(x, (4, 8, 8))
    with pytest.raises(ValueError, match=r"W \(columns\) = 10 is not divisible by the tubelet size 4"):
        patchify(torch.zeros(1, 4, 1, 8, 10), 4)
    with pytest.raises(ValueError, match=r"H \(rows\)"):
        token_grid((4, 1, 10, 8), (1, 4, 4))
    with pytest.raises(ValueError, match="5 dimensions"):
        patchify(torch.zeros(6, 1, 8, 8), 2)
    with pytest.raises(ValueError, match=r"\(B, N, P\)"):
        unpatchify(torch.zeros(4, 16), (4, 1, 8, 8), 2)
    with pytest.raises(ValueError, match="NaN"):
        patchify(torch.full((1, 2, 1, 4, 4), float("nan")), 2)
    with pytest.raises(ValueError, match="Inf"):
        unpatchify(torch.full((1, 16, 4), float("inf")), (2, 1, 4, 8), 2)
    with pytest.raises(ValueError, match="expected N = 16 tokens of length P = 4"):
        unpatchify(torch.zeros(1, 7, 4), (2, 1, 4, 8), 2)
    with pytest.raises(TypeError, match="tubelet"):
        patchify(x, (2, 2))
    with pytest.raises(ValueError, match="tubelet"):
        patchify(x, 0)
    with pytest.raises(TypeError, match="tensor or numpy"):
        patchify([[1.0]], 2)
    with pytest.raises(ValueError, match="clip_shape"):
        token_positions((4, 8, 8), 2)
    with pytest.raises(ValueError, match="divisible by 6"):
        positional_embedding((4, 1, 8, 8), 2, 10)
