"""Autoencoders and latent models: digits and videos (space-time tokens) <-> latent codes, and the training loops."""

from otgen.autoencoder.augment import augment_digits
from otgen.autoencoder.contrastive import ContrastiveCNN, train_contrastive
from otgen.autoencoder.embedding import SeparatedLatent, fit_embedding, view_features
from otgen.autoencoder.image import ConvAutoencoder, ImageAutoencoder
from otgen.autoencoder.neighbours import fuzzy_graph, knn_graph, train_neighbour_embedding
from otgen.autoencoder.training import batched_apply, reconstruction_loss, train_autoencoder
from otgen.autoencoder.video import SpaceTimeAutoencoder, VideoAutoencoder
from otgen.autoencoder.video_grid import ConvGridAutoencoder, GridVideoAutoencoder

__all__ = ["ConvAutoencoder", "ImageAutoencoder", "SeparatedLatent", "ContrastiveCNN", "augment_digits",
           "batched_apply", "fuzzy_graph", "knn_graph", "reconstruction_loss", "train_autoencoder",
           "train_contrastive", "train_neighbour_embedding", "SpaceTimeAutoencoder", "VideoAutoencoder",
           "ConvGridAutoencoder", "GridVideoAutoencoder", "fit_embedding", "view_features"]
