r"""A latent space in which digits form separated modes, learnt without labels.

:class:`SeparatedLatent` chains three unsupervised steps:

1. a contrastive encoder :math:`h = g(x)` (SimCLR with digit augmentations,
   :mod:`otgen.autoencoder.contrastive`): nearest neighbours in :math:`h` are other
   writings of the same digit;
2. a parametric neighbour embedding :math:`e = f(h)` to ``latent_dim`` dimensions
   (:mod:`otgen.autoencoder.neighbours`: the k-NN graph of the training features,
   UMAP's fuzzy weights, the neighbour-contrastive loss with the Cauchy kernel, as in
   t-SNE; in 2-D with the attraction exaggerated 4 times), which gathers each connected
   group of neighbours into a compact cluster with empty space between clusters;
3. a way back to images: an MLP :math:`c = m(e)` regressed onto the codes of an
   :class:`~otgen.autoencoder.image.ImageAutoencoder`, decoded by its decoder.

``encode(x) = f(g(x))`` is a network, so new digits are encoded without refitting;
``decode(e) = D(m(e))``. Neither the labels nor the number of clusters is used.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from otgen._base import BaseEstimator, check_seed, clone, like_input, part_from_state, part_state, spawn_seed, torch_generator
from otgen._validation import as_tensor, check_choice, check_positive_float, check_positive_int, resolve_device
from otgen.autoencoder.augment import augment_digits
from otgen.autoencoder.contrastive import ContrastiveCNN, train_contrastive
from otgen.autoencoder.image import ImageAutoencoder, check_images
from otgen.autoencoder.neighbours import fuzzy_graph, knn_graph, train_neighbour_embedding
from otgen.autoencoder.training import batched_apply

__all__ = ["SeparatedLatent", "EMBEDDING_LOSSES", "view_features", "fit_embedding"]

EMBEDDING_LOSSES = ("infonce", "umap")
_BATCH = 1024          # images per inference chunk
_HIDDEN = 256          # width of the embedding and decoding MLPs (small inputs: 128-D features, d-D codes)
_DECODER_BATCH = 256   # pairs (embedding, code) per step of the decoding MLP
_EMBED_LR = 3e-3       # neighbour-embedding Adam rate: 1e-3 lost 4 points of 10-NN agreement in 1,500 steps
_VIEW_STRENGTH = 1.0   # deformation strength of the embedding's extra views: the autoencoder's (others not measured)
_LOW_DIM = 2           # latent_dim at or below which _LOW_DIM_EXAGGERATION applies (measured at 2 only)
#: embed_exaggeration=None for latent_dim <= _LOW_DIM: chosen among 1, 2, 4, 8, 12 on a validation split of the
#: training digits (benchmarks/bench_embedding_2d.py: 0.924 / 0.965 / 0.974 / 0.967 / 0.785; 12 collapses clusters)
_LOW_DIM_EXAGGERATION = 4.0


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, _HIDDEN), nn.ReLU(), nn.Linear(_HIDDEN, _HIDDEN), nn.ReLU(),
                         nn.Linear(_HIDDEN, n_out))


def view_features(encoder: ContrastiveCNN, images: torch.Tensor, n_views: int, seed: int, device=None):
    """Features of ``n_views`` deformed copies of ``images`` (n, 1, 28, 28) -> (n_views, n, F), or None for 0.

    Each copy is :func:`~otgen.autoencoder.augment.augment_digits` at strength 1, drawn from the
    stream ``spawn_seed(seed, "embedding views")``.
    """
    n_views = check_positive_int(n_views, "n_views", minimum=0)
    if n_views == 0:
        return None
    x = check_images(images)
    gen = torch_generator(spawn_seed(seed, "embedding views"))
    return torch.stack([batched_apply(encoder.features, augment_digits(x, gen, _VIEW_STRENGTH), batch_size=_BATCH,
                                      device=device) for _ in range(n_views)])


def fit_embedding(features: torch.Tensor, latent_dim: int, *, views=None, n_neighbors: int = 15, steps: int = 1500,
                  batch_size: int = 1024, loss: str = "infonce", alpha: float = 1.0, exaggeration: float = 1.0,
                  graph=None, seed: int = 0, device=None):
    """The neighbour embedding of :class:`SeparatedLatent`: an MLP ``features`` (n, F) -> (n, latent_dim).

    The k-NN graph of ``graph`` (n, G) (default: of ``features``; UMAP's fuzzy weights) is kept by
    :func:`~otgen.autoencoder.neighbours.train_neighbour_embedding` with ``loss`` ("infonce" or
    "umap") and, for "infonce" only, the kernel tail ``alpha`` (1: Cauchy; see
    :func:`~otgen.autoencoder.neighbours.log_kernel`) and the attraction factor ``exaggeration``
    (1: none), each edge end reading the point or one of its ``views`` (V, n, F). The MLP always
    reads ``features``: ``graph`` only says who is whose neighbour (e.g. a higher-dimensional
    embedding of the same points: ``SeparatedLatent(embed_graph_dim=m)``). Returns
    ``(mlp, per-100-step losses, seconds)``.
    """
    feats = as_tensor(features, "features", ndim=2)
    check_choice(loss, "loss", EMBEDDING_LOSSES)
    alpha = check_positive_float(alpha, "alpha")
    nbr = feats if graph is None else as_tensor(graph, "graph", ndim=2)
    if nbr.shape[0] != feats.shape[0]:
        raise ValueError(f"graph must have one row per feature row ({feats.shape[0]}), got shape {tuple(nbr.shape)}")
    edges, weights = fuzzy_graph(*knn_graph(nbr, n_neighbors))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spawn_seed(seed, "embedder init"))
        embedder = _mlp(feats.shape[1], check_positive_int(latent_dim, "latent_dim"))
    start = time.perf_counter()
    hist = train_neighbour_embedding(embedder, feats, edges, weights, steps=check_positive_int(steps, "steps"),
                                     batch_size=min(check_positive_int(batch_size, "batch_size"), edges.shape[0]),
                                     lr=_EMBED_LR, generator=torch_generator(spawn_seed(seed, "embedding")),
                                     device=device, loss_kind=loss, views=views, alpha=alpha,
                                     exaggeration=exaggeration)
    return embedder, hist, time.perf_counter() - start


class SeparatedLatent(BaseEstimator):
    r"""Unsupervised latent with separated digit modes: contrastive features -> neighbour embedding, plus a decoder.

    Parameters
    ----------
    latent_dim : int, default 10
        Dimension d of the embedding (``2`` for figures).
    epochs : int, default 60
        Epochs of the contrastive encoder (NT-Xent). On the 4,000 embedded training digits
        (15 steps an epoch) the features' held-out 10-NN label agreement is 0.958 after 60
        epochs (``benchmarks/bench_separated_latent.py``); the latent built on 20 epochs reached
        0.932 (its ``otgen compare mnist`` run). The encoder is most of the latent's cost.
    batch_size : int, default 256
        Digits per contrastive step (2 x 256 views; each view has 510 negatives).
    lr : float, default 2e-3
        Peak learning rate of the contrastive encoder (Adam, cosine decay).
    temperature : float, default 0.5
        NT-Xent temperature T.
    strength : float, default 1.5
        Strength of the contrastive views' deformations (see
        :func:`~otgen.autoencoder.augment.augment_digits`; 1 is the autoencoder's).
    width : int, default 32
        Channels of the encoder's first convolution.
    feature_dim : int, default 128
        Dimension of the contrastive features h.
    n_neighbors : int, default 15
        k of the k-NN graph of the features.
    embed_steps : int, default 1500
        Optimiser steps of the neighbour embedding (batches of ``embed_batch`` edges).
    embed_batch : int, default 1024
    embed_views : int, default 4
        Deformed copies of each training digit (:func:`~otgen.autoencoder.augment.augment_digits`
        at strength 1) whose features the neighbour embedding also learns from: each end of
        an edge reads the digit or one of its copies, so that the embedding maps a digit's
        neighbourhood, not only the digit, into its cluster, and held-out digits land with
        their neighbours. ``0``: the training features only.
    embed_loss : {"infonce", "umap"}, default "infonce"
        Neighbour-contrastive loss with the kernel :math:`(1 + d^2/\alpha)^{-\alpha}`
        (t-SNE-like), or UMAP's negative-sampling cross-entropy with ``min_dist`` 0.
    embed_exaggeration : float or None, default None
        Factor of the "infonce" loss's attraction term (t-SNE's exaggeration, held through the
        whole fit): > 1 pulls each digit's neighbours tighter, so clusters are compact and the
        gaps between them wide. ``None``: 4 for ``latent_dim`` <= 2, 1 above (the 10-D results in
        the README were measured at 1). In 2-D on the embedded digits, exaggeration 1 / 2 / 4 / 8 /
        12 gave validation 10-NN agreement 0.924 / 0.965 / 0.974 / 0.967 / 0.785 (12 merges
        clusters); 4 was chosen on that validation split, not on the test digits
        (``benchmarks/bench_embedding_2d.py``, ``benchmarks/results/embedding_2d.md``). On a
        second split and encoder (seed 1) it reached 0.956 on the test digits, against 0.938 at 1.
        In 10-D, 4 gave 0.963 against 0.959 on the test digits (one seed): 10-D keeps 1 so far.
    embed_alpha : float, default 1.0
        Tail :math:`\alpha` of the "infonce" kernel :math:`(1 + d^2/\alpha)^{-\alpha}`
        (:func:`~otgen.autoencoder.neighbours.log_kernel`): 1 is the Cauchy kernel;
        :math:`\alpha < 1` heavier tails, tighter and further-apart clusters (Kobak et al. 2020).
        In 2-D, 0.5 raised the validation agreement less than exaggeration did (see the benchmark).
    embed_graph_dim : int, default 0
        ``0``: the embedding keeps the k-NN graph of the features. ``m > latent_dim``: two
        stages; an embedding to m dimensions is fitted first (same settings, Cauchy kernel, no
        exaggeration), and the final embedding keeps the k-NN graph of its training points (the
        MLP still reads the features, so new digits are encoded as before; the first stage costs
        one more embedding fit).
    decoder_epochs : int, default 100
        Epochs of the MLP from the embedding to the autoencoder's code.
    autoencoder : ImageAutoencoder or None, default None
        Unfitted autoencoder whose decoder draws the images (cloned and fitted on the
        same digits). ``None``: ``ImageAutoencoder(latent_dim=32, epochs=20)`` (a 32-D
        code: sharp reconstructions, since the separated latent lives elsewhere).
    device : str or torch.device or None, default None
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds every stage (spawned streams).
    verbose : bool, default False
        Show the contrastive encoder's and the autoencoder's progress bars.

    Attributes
    ----------
    encoder_ : ContrastiveCNN
    embedder_ : torch.nn.Sequential
        features (feature_dim) -> embedding (latent_dim).
    code_mlp_ : torch.nn.Sequential
        embedding -> standardised autoencoder code.
    autoencoder_ : ImageAutoencoder
    history_ : dict
        ``"loss"``: per-epoch contrastive loss; ``"embedding_loss"`` (per 100 steps);
        ``"decoder_loss"`` (per epoch); ``"time"``: seconds of each stage
        (``contrastive``, ``embedding``, ``autoencoder``, ``decoder``).

    Notes
    -----
    At the defaults on the 4,000 embedded training digits, ``otgen compare mnist --latent separated``
    measured a held-out 10-NN label agreement of 0.960 (10-D). On 2 otherwise idle cores (2 torch
    threads, the host's float32 GEMM at 179 GFLOP/s) its stages took (``history_["time"]``, recorded in
    ``metrics.json`` as ``timings.latent_stages``): contrastive encoder 91 s, embedding 27 s, autoencoder
    26 s, decoding MLP 3 s (the whole comparison 266 s; README, the default row). Cheaper encoders (fewer
    epochs, a narrower first convolution, 14 x 14 inputs) lose agreement
    (``benchmarks/bench_separated_latent.py``). In 2-D (exaggeration 4, chosen on validation digits) the
    embedding of one 60-epoch encoder's features reached 0.959 on the held-out test digits, against
    0.926 at exaggeration 1 (``benchmarks/bench_embedding_2d.py``).
    The k-NN graph is computed by chunks (memory O(n k)), so 60,000 digits fit.

    References
    ----------
    T. Chen et al., "A simple framework for contrastive learning of visual
    representations", ICML 2020. S. Damrich, J. N. Böhm, F. A. Hamprecht, D. Kobak,
    "From t-SNE to UMAP with contrastive learning", ICLR 2023. R. McConville et al.,
    "N2D: (not too) deep clustering via clustering the local manifold of an
    autoencoded embedding", ICPR 2020.
    """

    _FITTED_ATTR = "embedder_"
    _SAVE_VERSION = 1

    def __init__(self, latent_dim: int = 10, epochs: int = 60, batch_size: int = 256, lr: float = 2e-3,
                 temperature: float = 0.5, strength: float = 1.5, width: int = 32, feature_dim: int = 128,
                 n_neighbors: int = 15, embed_steps: int = 1500, embed_batch: int = 1024, embed_views: int = 4,
                 embed_loss: str = "infonce", embed_exaggeration: float | None = None, embed_alpha: float = 1.0,
                 embed_graph_dim: int = 0, decoder_epochs: int = 100, autoencoder=None, device=None, seed: int = 0,
                 verbose: bool = False):
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.temperature = temperature
        self.strength = strength
        self.width = width
        self.feature_dim = feature_dim
        self.n_neighbors = n_neighbors
        self.embed_steps = embed_steps
        self.embed_batch = embed_batch
        self.embed_views = embed_views
        self.embed_loss = embed_loss
        self.embed_exaggeration = embed_exaggeration
        self.embed_alpha = embed_alpha
        self.embed_graph_dim = embed_graph_dim
        self.decoder_epochs = decoder_epochs
        self.autoencoder = autoencoder
        self.device = device
        self.seed = seed
        self.verbose = verbose

    # -- fit -----------------------------------------------------------------------
    def _check_settings(self) -> int:
        for name in ("latent_dim", "epochs", "batch_size", "width", "feature_dim", "n_neighbors", "embed_steps",
                     "embed_batch", "decoder_epochs"):
            check_positive_int(getattr(self, name), name)
        for name in ("lr", "temperature"):
            check_positive_float(getattr(self, name), name)
        check_positive_float(self.strength, "strength", allow_zero=True)
        check_positive_int(self.embed_views, "embed_views", minimum=0)
        check_choice(self.embed_loss, "embed_loss", EMBEDDING_LOSSES)
        self._embedding_settings()
        if self.autoencoder is not None and not isinstance(self.autoencoder, ImageAutoencoder):
            raise TypeError(f"autoencoder must be an ImageAutoencoder or None, got {type(self.autoencoder).__name__}")
        return check_seed(self.seed)

    def _embedding_settings(self) -> tuple[float, float, int]:
        """``(exaggeration, alpha, graph_dim)`` of the neighbour embedding (``embed_exaggeration=None``: the
        default of ``latent_dim``)."""
        if self.embed_exaggeration is None:
            exaggeration = _LOW_DIM_EXAGGERATION if self.latent_dim <= _LOW_DIM else 1.0
        else:
            exaggeration = check_positive_float(self.embed_exaggeration, "embed_exaggeration")
        alpha = check_positive_float(self.embed_alpha, "embed_alpha")
        graph_dim = check_positive_int(self.embed_graph_dim, "embed_graph_dim", minimum=0)
        if graph_dim and graph_dim <= self.latent_dim:
            raise ValueError(f"embed_graph_dim must be 0 or larger than latent_dim={self.latent_dim}, got {graph_dim}")
        return exaggeration, alpha, graph_dim

    def fit(self, images) -> "SeparatedLatent":
        """Train on ``images`` (n, 28, 28) or (n, 1, 28, 28) in [0, 1] (no labels); returns self."""
        x = check_images(images)
        seed = self._check_settings()
        if x.shape[0] <= self.n_neighbors:
            raise ValueError(f"need more than n_neighbors={self.n_neighbors} images, got {x.shape[0]}")
        dev = resolve_device(self.device)
        encoder, enc_hist = self._fit_encoder(x, seed, dev)
        feats = batched_apply(encoder.features, x, batch_size=_BATCH, device=dev)          # (n, F)
        views = view_features(encoder, x, self.embed_views, seed, dev)                     # (V, n, F) or None
        exaggeration, alpha, graph_dim = self._embedding_settings()
        kw = dict(views=views, n_neighbors=self.n_neighbors, steps=self.embed_steps, batch_size=self.embed_batch,
                  loss=self.embed_loss, seed=seed, device=dev)
        graph, first_time = None, 0.0
        if graph_dim:                                  # two stages: neighbours from a higher-dimensional embedding
            first, _, first_time = fit_embedding(feats, graph_dim, **kw)
            graph = batched_apply(first, feats, batch_size=_BATCH, device=dev)           # (n, graph_dim)
        embedder, emb_hist, emb_time = fit_embedding(feats, self.latent_dim, alpha=alpha, exaggeration=exaggeration,
                                                     graph=graph, **kw)
        emb_time += first_time
        emb = batched_apply(embedder, feats, batch_size=_BATCH, device=dev)               # (n, d)
        ae = clone(self.autoencoder) if self.autoencoder is not None else ImageAutoencoder(latent_dim=32, epochs=20)
        ae.set_params(device=self.device, seed=spawn_seed(seed, "autoencoder") % 2**31, verbose=self.verbose).fit(x)
        codes = torch.as_tensor(ae.encode(x))                                              # (n, c)
        self.code_mean_, self.code_std_ = codes.mean(0), codes.std(0).clamp_min(1e-6)
        code_mlp, dec_hist, dec_time = self._fit_code_mlp(emb, (codes - self.code_mean_) / self.code_std_, seed, dev)
        self.encoder_, self.embedder_, self.code_mlp_, self.autoencoder_ = encoder, embedder, code_mlp, ae
        self.history_ = {"loss": enc_hist["loss"], "embedding_loss": emb_hist, "decoder_loss": dec_hist,
                         "time": {"contrastive": enc_hist["time"][-1], "embedding": emb_time,
                                  "autoencoder": ae.history_["time"][-1], "decoder": dec_time}}
        return self

    def _fit_encoder(self, x: torch.Tensor, seed: int, dev) -> ContrastiveCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spawn_seed(seed, "encoder init"))
            encoder = ContrastiveCNN(self.width, self.feature_dim)
        hist = train_contrastive(encoder, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                 temperature=self.temperature, strength=self.strength,
                                 generator=torch_generator(spawn_seed(seed, "contrastive")), device=dev,
                                 verbose=self.verbose)
        return encoder, hist

    def _fit_code_mlp(self, emb: torch.Tensor, target: torch.Tensor, seed: int, dev):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spawn_seed(seed, "decoder init"))
            mlp = _mlp(emb.shape[1], target.shape[1]).to(dev)
        gen = torch_generator(spawn_seed(seed, "decoder"))
        n = emb.shape[0]
        steps = math.ceil(n / _DECODER_BATCH)
        total = self.decoder_epochs * steps
        opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
        hist, start = [], time.perf_counter()
        for _ in range(self.decoder_epochs):
            perm = torch.randperm(n, generator=gen)
            running = 0.0
            for s in range(steps):
                b = perm[s * _DECODER_BATCH:(s + 1) * _DECODER_BATCH]
                loss = (mlp(emb[b].to(dev)) - target[b].to(dev)).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item() * b.numel()
            hist.append(running / n)
        return mlp.eval(), hist, time.perf_counter() - start

    # -- inference -----------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.embedder_.parameters()).device

    def features(self, images):
        """Contrastive features of ``images`` -> (n, feature_dim), unit norm."""
        self._check_fitted()
        out = batched_apply(self.encoder_.features, check_images(images), batch_size=_BATCH, device=self._device())
        return like_input(out, images)

    def encode(self, images):
        """Embedding of ``images`` (n, 28, 28) or (n, 1, 28, 28) -> (n, latent_dim)."""
        self._check_fitted()
        dev = self._device()
        h = batched_apply(self.encoder_.features, check_images(images), batch_size=_BATCH, device=dev)
        return like_input(batched_apply(self.embedder_, h, batch_size=_BATCH, device=dev), images)

    def decode(self, codes):
        """Images from embeddings (n, latent_dim) -> (n, 28, 28) in [0, 1]."""
        self._check_fitted()
        z = as_tensor(codes, "codes", ndim=2)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"codes must have shape (n, {self.latent_dim}), got shape {tuple(z.shape)}")
        c = batched_apply(self.code_mlp_, z, batch_size=_BATCH, device=self._device())
        img = self.autoencoder_.decode(c * self.code_std_ + self.code_mean_)        # torch in -> torch out
        return like_input(img.cpu(), codes)

    def reconstruct(self, images):
        """``decode(encode(images))`` -> (n, 28, 28)."""
        self._check_fitted()
        x = check_images(images)
        return like_input(self.decode(self.encode(x)).cpu(), images)

    def reconstruction_error(self, images, per_image: bool = False):
        r"""Mean squared pixel error :math:`\frac{1}{784}\|\mathrm{decode}(\mathrm{encode}(x)) - x\|^2`.

        A float (mean over images) or, with ``per_image=True``, an (n,) array (numpy for
        numpy input, torch for torch input).
        """
        self._check_fitted()
        x = check_images(images)[:, 0]
        err = ((self.reconstruct(x) - x) ** 2).mean(dim=(1, 2))
        return like_input(err, images) if per_image else float(err.mean())

    # -- files ---------------------------------------------------------------------
    def _get_state(self) -> dict:
        return {"encoder": self.encoder_.state_dict(), "embedder": self.embedder_.state_dict(),
                "code_mlp": self.code_mlp_.state_dict(), "code_mean": self.code_mean_, "code_std": self.code_std_,
                "autoencoder": part_state(self.autoencoder_), "history": self.history_}

    def _set_state(self, state: dict, device=None) -> None:
        dev = resolve_device(device)
        self.autoencoder_ = part_from_state(ImageAutoencoder, state["autoencoder"], device)
        self.encoder_ = ContrastiveCNN(self.width, self.feature_dim)
        self.encoder_.load_state_dict(state["encoder"])
        self.embedder_ = _mlp(self.feature_dim, self.latent_dim)
        self.embedder_.load_state_dict(state["embedder"])
        self.code_mlp_ = _mlp(self.latent_dim, state["code_mean"].shape[0])
        self.code_mlp_.load_state_dict(state["code_mlp"])
        for net in (self.encoder_, self.embedder_, self.code_mlp_):
            net.to(dev).eval()
        self.code_mean_, self.code_std_ = state["code_mean"], state["code_std"]
        self.history_ = state["history"]

