import numpy as np
import pytest
import torch
from sklearn.base import clone

from otgen import NotFittedError
from otgen.autoencoder import ImageAutoencoder
from otgen.autoencoder.embedding import SeparatedLatent
from otgen.autoencoder.neighbours import _reader, fuzzy_graph, knn_graph, train_neighbour_embedding


def _two_classes(n=120, seed=0):
    """Two clearly different image classes: a horizontal or a vertical bar, jittered, with varying ink."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.float32)
    y = np.arange(n) % 2
    for i in range(n):
        pos, start, ink = rng.integers(12, 16), rng.integers(4, 8), rng.uniform(0.6, 1.0)
        if y[i]:
            x[i, pos - 2:pos + 2, start:start + 18] = ink
        else:
            x[i, start:start + 18, pos - 2:pos + 2] = ink
    return x, y


def _agreement(te, yte, tr, ytr, k=10):
    d = ((te[:, None] - tr[None]) ** 2).sum(-1)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((ytr[nn] == yte[:, None]).mean())


TINY = dict(latent_dim=2, epochs=4, batch_size=32, width=8, feature_dim=32, n_neighbors=5, embed_steps=150,
            embed_batch=128, decoder_epochs=5, device="cpu",
            autoencoder=ImageAutoencoder(latent_dim=3, epochs=3, batch_size=32, width=8, hidden=32))


@pytest.fixture(scope="module")
def fitted():
    x, _ = _two_classes()
    return SeparatedLatent(**TINY).fit(x)


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    idx, dist = knn_graph(x, 4, chunk=7)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(np.sort(idx.numpy(), 1), np.sort(np.argsort(d, 1)[:, :4], 1))
    np.testing.assert_allclose(dist.numpy(), np.sort(d, 1)[:, :4], atol=1e-4)


def test_fuzzy_graph_is_symmetric_union():
    idx = torch.tensor([[1, 2], [0, 2], [0, 1], [2, 1]])
    dist = torch.tensor([[1.0, 2.0], [1.0, 3.0], [2.0, 3.0], [1.0, 1.5]])
    edges, w = fuzzy_graph(idx, dist)
    assert bool((edges[:, 0] < edges[:, 1]).all()) and len(set(map(tuple, edges.tolist()))) == len(edges)
    assert {tuple(e) for e in edges.tolist()} == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}
    assert bool((w > 0).all()) and bool((w <= 1).all())
    # the nearest neighbour of each point has directed weight 1, so its union weight is 1
    assert float(w[(edges[:, 0] == 0) & (edges[:, 1] == 1)]) == pytest.approx(1.0)


def test_views_reader_draws_each_row_from_the_point_or_one_of_its_views():
    inputs = torch.arange(6.0)[:, None].repeat(1, 3)                          # (6, 3): row i holds i
    views = torch.stack([inputs + 100, inputs + 200])                         # (2, 6, 3)
    read = _reader(inputs, views, torch.Generator().manual_seed(0))
    ids = torch.arange(6).repeat(200)
    rows = read(ids)                                                          # (1200, 3)
    offset = rows[:, 0] - ids.float()
    assert set(offset.unique().tolist()) == {0.0, 100.0, 200.0}               # every version is read
    assert torch.equal(rows, rows[:, :1].expand(-1, 3))                       # whole rows, never mixed
    assert torch.equal(_reader(inputs, None, None)(ids), inputs[ids])
    with pytest.raises(ValueError, match="views must have shape"):
        _reader(inputs, views[:, :5], torch.Generator())


def test_embedding_with_views_keeps_neighbours_together():
    """Two groups of 3-D features; views jitter them. The views-trained embedding keeps the groups apart."""
    g = torch.Generator().manual_seed(0)
    feats = torch.cat([torch.randn(60, 3, generator=g) * 0.1, torch.randn(60, 3, generator=g) * 0.1 + 3])
    views = feats[None] + 0.1 * torch.randn(3, 120, 3, generator=g)
    edges, w = fuzzy_graph(*knn_graph(feats, 5))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    train_neighbour_embedding(net, feats, edges, w, steps=150, batch_size=64, lr=3e-3, generator=g,
                              loss_kind="infonce", views=views)
    with torch.no_grad():
        e = net(feats).numpy()
    y = np.repeat([0, 1], 60)
    assert _agreement(e, y, e, y, k=5) > 0.95


def test_separates_two_image_classes(fitted):
    x, y = _two_classes()
    xt, yt = _two_classes(40, seed=1)
    assert _agreement(fitted.encode(xt), yt, fitted.encode(x), y) == 1.0


def test_shapes_kinds_and_history(fitted):
    x, _ = _two_classes(10, seed=2)
    z = fitted.encode(x)
    assert isinstance(z, np.ndarray) and z.shape == (10, 2)
    img = fitted.decode(z)
    assert isinstance(img, np.ndarray) and img.shape == (10, 28, 28) and img.min() >= 0 and img.max() <= 1
    zt = fitted.encode(torch.from_numpy(x))
    assert isinstance(zt, torch.Tensor)
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-5)
    assert isinstance(fitted.decode(zt), torch.Tensor)
    per = fitted.reconstruction_error(x, per_image=True)
    assert per.shape == (10,) and fitted.reconstruction_error(x) == pytest.approx(float(per.mean()), rel=1e-5)
    assert len(fitted.history_["loss"]) == 4 and set(fitted.history_["time"]) == {"contrastive", "embedding",
                                                                                "autoencoder", "decoder"}
    with pytest.raises(ValueError, match="shape"):
        fitted.decode(np.zeros((2, 3), np.float32))


def test_contract_clone_not_fitted_save_load(fitted, tmp_path):
    twin = clone(fitted)
    assert repr(twin) == repr(fitted) and not hasattr(twin, "embedder_")
    with pytest.raises(NotFittedError):
        twin.encode(np.zeros((1, 28, 28), np.float32))
    path = tmp_path / "sep.pt"
    fitted.save(path)
    back = SeparatedLatent.load(path)
    x, _ = _two_classes(8, seed=3)
    np.testing.assert_allclose(back.encode(x), fitted.encode(x), atol=1e-6)
    np.testing.assert_allclose(back.reconstruct(x), fitted.reconstruct(x), atol=1e-6)
    assert back.history_["loss"] == fitted.history_["loss"]


def test_bad_settings():
    x, _ = _two_classes(20)
    with pytest.raises(ValueError):
        SeparatedLatent(embed_loss="pca").fit(x)
    with pytest.raises(TypeError):
        SeparatedLatent(autoencoder="ae").fit(x)
    with pytest.raises(ValueError, match="n_neighbors"):
        SeparatedLatent(n_neighbors=30).fit(x)
    with pytest.raises(ValueError, match="embed_views"):
        SeparatedLatent(embed_views=-1).fit(x)


def test_embedding_stage_functions_check_their_input():
    from otgen.autoencoder import ContrastiveCNN, fit_embedding, view_features
    feats = torch.randn(40, 4)
    with pytest.raises(ValueError, match="loss"):
        fit_embedding(feats, 2, loss="pca")
    with pytest.raises(ValueError, match="latent_dim"):
        fit_embedding(feats, 0)
    with pytest.raises(ValueError, match="features"):
        fit_embedding(feats[0], 2)
    with pytest.raises(ValueError, match="n_views"):
        view_features(ContrastiveCNN(4, 8), torch.rand(5, 28, 28), -1, seed=0)
    assert view_features(ContrastiveCNN(4, 8), torch.rand(5, 28, 28), 0, seed=0) is None
    views = view_features(ContrastiveCNN(4, 8), torch.rand(5, 28, 28), 2, seed=0)
    assert views.shape == (2, 5, 8)
    net, hist, secs = fit_embedding(feats, 2, views=feats[None] + 0.01, n_neighbors=5, steps=20, batch_size=32)
    assert net(feats).shape == (40, 2) and len(hist) == 1 and secs > 0


def test_heavy_tailed_kernel_is_cauchy_at_alpha_one_and_heavier_below():
    from otgen.autoencoder.neighbours import log_kernel
    d2 = torch.tensor([0.0, 0.5, 4.0, 100.0])
    torch.testing.assert_close(log_kernel(d2, 1.0), -torch.log1p(d2))                   # t-SNE's Cauchy kernel
    torch.testing.assert_close(log_kernel(d2, 1e6), -d2, rtol=1e-3, atol=1e-4)           # alpha -> inf: Gaussian
    assert float(log_kernel(d2, 0.5)[0]) == 0.0                                          # q(0) = 1 for every alpha
    assert bool((log_kernel(d2[1:], 0.5) > log_kernel(d2[1:], 1.0)).all())               # heavier tail below 1
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="alpha"):
            log_kernel(d2, bad)


def test_infonce_loss_at_alpha_one_is_the_cauchy_loss():
    from otgen.autoencoder.neighbours import _infonce_loss
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(10, 2, generator=g)
    e = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    got = _infonce_loss(torch.nn.Identity(), lambda ids: pts[ids], e, torch.device("cpu"), 1.0)
    logq = -torch.log1p(torch.cdist(pts[e[:, 0]], pts[e[:, 1]]).pow(2))
    want = torch.nn.functional.cross_entropy(logq, torch.arange(5))
    torch.testing.assert_close(got, want)
    assert not torch.isclose(_infonce_loss(torch.nn.Identity(), lambda ids: pts[ids], e, torch.device("cpu"), 0.3),
                             want)
    # exaggeration 1 is the cross-entropy itself; rho multiplies the attraction term -log q_ii only
    one = _infonce_loss(torch.nn.Identity(), lambda ids: pts[ids], e, torch.device("cpu"), 1.0, 1.0 + 1e-12)
    torch.testing.assert_close(one, want)
    three = _infonce_loss(torch.nn.Identity(), lambda ids: pts[ids], e, torch.device("cpu"), 1.0, 3.0)
    torch.testing.assert_close(three, want - 2 * logq.diagonal().mean())


def test_embedding_keeps_the_graph_it_is_given_not_the_features():
    """Structureless features; the graph's points form two far groups. The embedding follows the graph."""
    from otgen.autoencoder import fit_embedding
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(120, 8, generator=g)
    y = np.repeat([0, 1], 60)
    graph = torch.randn(120, 3, generator=g) * 0.1 + torch.as_tensor(y, dtype=torch.float32)[:, None] * 5
    with_graph, _, _ = fit_embedding(feats, 2, graph=graph, n_neighbors=5, steps=300, batch_size=64, alpha=0.5)
    own, _, _ = fit_embedding(feats, 2, n_neighbors=5, steps=300, batch_size=64, alpha=0.5)
    with torch.no_grad():
        e, e_own = with_graph(feats).numpy(), own(feats).numpy()
    assert _agreement(e, y, e, y, k=5) > 0.8 > 0.7 > _agreement(e_own, y, e_own, y, k=5)   # measured 0.88, 0.61


def test_two_stage_heavy_tailed_latent_separates_two_image_classes():
    x, y = _two_classes()
    xt, yt = _two_classes(40, seed=1)
    lat = SeparatedLatent(**dict(TINY, embed_alpha=0.5, embed_graph_dim=4)).fit(x)
    assert _agreement(lat.encode(xt), yt, lat.encode(x), y) == 1.0
    assert lat._embedding_settings() == (4.0, 0.5, 4)


def test_embedding_settings_defaults_and_bad_values():
    from otgen.autoencoder import fit_embedding
    from otgen.autoencoder.embedding import _LOW_DIM_EXAGGERATION
    assert SeparatedLatent(latent_dim=10)._embedding_settings() == (1.0, 1.0, 0)     # 10-D: as in the README runs
    assert SeparatedLatent(latent_dim=2)._embedding_settings() == (_LOW_DIM_EXAGGERATION, 1.0, 0)
    assert SeparatedLatent(latent_dim=2, embed_exaggeration=1, embed_alpha=0.7)._embedding_settings() == (1.0, 0.7, 0)
    x, _ = _two_classes(20)
    with pytest.raises(ValueError, match="embed_alpha"):
        SeparatedLatent(embed_alpha=0.0).fit(x)
    with pytest.raises(ValueError, match="embed_exaggeration"):
        SeparatedLatent(embed_exaggeration=-2.0).fit(x)
    with pytest.raises(ValueError, match="embed_graph_dim"):
        SeparatedLatent(latent_dim=2, embed_graph_dim=2).fit(x)
    with pytest.raises(ValueError, match="embed_graph_dim"):
        SeparatedLatent(embed_graph_dim=-1).fit(x)
    feats = torch.randn(40, 4)
    with pytest.raises(ValueError, match="alpha"):
        fit_embedding(feats, 2, alpha=-1.0)
    with pytest.raises(ValueError, match="exaggeration"):
        fit_embedding(feats, 2, exaggeration=0.0)
    with pytest.raises(ValueError, match="graph"):
        fit_embedding(feats, 2, graph=torch.randn(39, 3))
