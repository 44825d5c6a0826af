"""What the experiments share: settings checks, a timed sampler, JSON output, markdown numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
import torch

from otgen._base import check_seed, spawn_seed
from otgen._validation import check_positive_float, check_positive_int
from otgen.metrics import copy_rate, sliced_wasserstein

__all__ = ["latent_scores", "check_out_dir", "jsonable", "write_json", "write_text", "fmt", "timed_sample", "check_settings_fields",
           "binomial_se", "difference_se"]

WARM_UP_SAMPLES = 16      # a generator's one-time preparation (temperature, detector) runs on this small batch


def check_out_dir(out_dir) -> str:
    """``out_dir`` as a string path of a folder that exists (created) and is writable."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"the output folder must be a path (str or os.PathLike), got {type(out_dir).__name__}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"the output folder must be a folder, got the existing file {out_dir!r}")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {out_dir!r}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"the output folder {out_dir!r} is not writable")
    return out_dir


def jsonable(x):
    """numpy / torch scalars and arrays (recursively) -> plain JSON types; NaN / Inf -> None."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def write_text(path, text: str) -> str:
    """Write ``text`` atomically (temporary file, then rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_json(path, obj) -> str:
    return write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def fmt(v, nd: int = 3) -> str:
    """A number for a markdown table; '-' for None / NaN, '∞' for infinity (e.g. a threshold that cuts nothing)."""
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}"


def binomial_se(p: float, n: int) -> float:
    """Standard error of a rate p measured on n independent samples, sqrt(p (1 - p) / n)."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def difference_se(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two independent rates, each on n samples."""
    return math.sqrt(binomial_se(a, n) ** 2 + binomial_se(b, n) ** 2)


def timed_sample(gen, n: int, seed: int):
    """Warm up (one-time preparation) on a small batch, then time one batch of ``n``.

    Returns ``(codes (n, d) ndarray, info dict, seconds)``.
    """
    gen.sample(min(n, WARM_UP_SAMPLES), seed=spawn_seed(seed, "warm-up"))
    t0 = time.perf_counter()
    codes, info = gen.sample(n, seed=seed, return_info=True)
    return codes, info, time.perf_counter() - t0


SPEED_GEMM_SIZE = 512    # one 512³ float32 GEMM (0.27 GFLOP): long enough to time, short enough to repeat
SPEED_REPEATS = 7        # the median of 7, so that one stall of a shared host does not move it


def host_gflops() -> float:
    """The host's float32 matrix-multiply rate now, in GFLOP/s (median of a few 512³ GEMMs, torch's threads).

    A comparison's run time depends on the host's speed at the time: on the project's shared 2-core
    machine the same default MNIST run took 903 s and 375 s hours apart. ``environment.gemm_gflops``
    beside ``timings.total`` lets runs and time budgets be compared across hosts and hours.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(SPEED_GEMM_SIZE, SPEED_GEMM_SIZE, generator=g)
    b = torch.randn(SPEED_GEMM_SIZE, SPEED_GEMM_SIZE, generator=g)
    torch.mm(a, b)                                    # warm-up
    times = []
    for _ in range(SPEED_REPEATS):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * SPEED_GEMM_SIZE ** 3 / max(float(np.median(times)), 1e-9) / 1e9


def check_settings_fields(settings) -> None:
    """Type and range checks of a settings dataclass from each field's ``metadata["check"]``.

    ``check`` is one of ``"int"``, ``"int0"`` (>= 0), ``"float"`` (> 0), ``"seed"``, ``"fraction"`` (in (0, 1)),
    a tuple of allowed strings, or a callable ``(value, name) -> None``; ``None`` values pass when the
    field's ``metadata["optional"]`` is true.
    """
    for f in dataclasses.fields(settings):
        check, value = f.metadata.get("check"), getattr(settings, f.name)
        if check is None or (value is None and f.metadata.get("optional")):
            continue
        if check == "int":
            check_positive_int(value, f.name, minimum=f.metadata.get("minimum", 1))
        elif check == "int0":
            check_positive_int(value, f.name, minimum=0)
        elif check == "float":
            check_positive_float(value, f.name)
        elif check == "seed":
            check_seed(value, f.name)
        elif check == "fraction":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{f.name} must be a number in (0, 1), got {value!r}")
        elif isinstance(check, tuple):
            if value not in check:
                raise ValueError(f"{f.name} must be one of {list(check)}, got {value!r}")
        else:
            check(value, f.name)


def latent_scores(row: dict, z_test, z_train, copy_radius: float, seed: int) -> dict:
    """The scores every row gets in the standardised latent: sliced Wasserstein distance to the held-out
    codes, the share of copies of training codes, speed, and the share of OT points near the singular set.

    ``row``: ``z`` (n, d) standardised codes, ``seconds`` (None for a floor), ``info`` (the generator's).
    """
    z, secs = row["z"], row["seconds"]
    out = dict(sw_latent=sliced_wasserstein(z, z_test, seed=seed), copy_rate=copy_rate(z, z_train, copy_radius),
               samples_per_s=None if secs is None else len(z) / secs, sample_seconds=secs)
    if "near_singular" in row["info"]:
        out["near_singular_fraction"] = float(np.mean(row["info"]["near_singular"]))
    return out
