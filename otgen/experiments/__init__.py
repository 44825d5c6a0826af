"""Experiments: where settings meet data. Each is a frozen settings dataclass and named stages.

- :mod:`otgen.experiments.mnist`: OT versus latent DDPM / DDIM on MNIST digits.
- :mod:`otgen.experiments.video`: OT versus a diffusion transformer on video clip latents.
- :mod:`otgen.experiments.toy2d`: the 2-D figures' fits (singular set, mode mixture, detector PR).

Fitted models are kept in one :class:`Cache`, keyed by the settings and the code version.
"""

from otgen.experiments import mnist, toy2d, video
from otgen.experiments._cache import Cache, code_version
from otgen.experiments.mnist import MNISTSettings
from otgen.experiments.video import VideoSettings

__all__ = ["Cache", "code_version", "mnist", "video", "toy2d", "MNISTSettings", "VideoSettings"]
