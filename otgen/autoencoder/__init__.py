"""Autoencoders: digits (and later videos) <-> latent codes, and the training loop."""

from otgen.autoencoder.image import ConvAutoencoder, ImageAutoencoder
from otgen.autoencoder.training import batched_apply, reconstruction_loss, train_autoencoder

__all__ = ["ConvAutoencoder", "ImageAutoencoder", "batched_apply", "reconstruction_loss", "train_autoencoder"]
