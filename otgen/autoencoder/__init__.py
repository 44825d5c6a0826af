"""Autoencoders: digits and videos (space-time tokens) <-> latent codes, and the training loop."""

from otgen.autoencoder.image import ConvAutoencoder, ImageAutoencoder
from otgen.autoencoder.training import batched_apply, reconstruction_loss, train_autoencoder
from otgen.autoencoder.video import SpaceTimeAutoencoder, VideoAutoencoder

__all__ = ["ConvAutoencoder", "ImageAutoencoder", "batched_apply", "reconstruction_loss", "train_autoencoder",
           "SpaceTimeAutoencoder", "VideoAutoencoder"]
