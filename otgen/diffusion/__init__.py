"""Diffusion baseline: noise schedules, DDPM / DDIM / DPM-Solver++ samplers, denoisers, training and sampling loops."""

from otgen.diffusion.denoisers import MLPDenoiser, sinusoidal_embedding
from otgen.diffusion.grid import GridLatentDiffusion
from otgen.diffusion.latent import LatentDiffusion
from otgen.diffusion.schedules import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, NoiseSchedule,
                                       SchedulerOutput)
from otgen.diffusion.training import sample, train_denoiser
from otgen.diffusion.transformer import DiTDenoiser, SpaceTimeDiT

__all__ = ["NoiseSchedule", "DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "SchedulerOutput",
           "MLPDenoiser", "sinusoidal_embedding", "train_denoiser", "sample", "LatentDiffusion", "DiTDenoiser",
           "SpaceTimeDiT", "GridLatentDiffusion"]
