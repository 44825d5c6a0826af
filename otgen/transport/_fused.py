"""Fused score + argmax / top-k CPU kernel (``_fused.c``), compiled at first use and loaded with ctypes.

The kernel scores float32 points X (M, d) against targets Y (N, d) at heights h,
s_ij = <x_i, y_j> + h_j, and keeps only each row's k best targets (k <= ``TOPK_MAX``),
without writing the M x N score matrix (for d = 16..64 a GEMM spends its time storing it). It
needs x86-64 with AVX2 and FMA and a C compiler (``$CC`` or ``cc``); the shared library is
cached under ``$XDG_CACHE_HOME/otgen`` (default ``~/.cache/otgen``), keyed by a hash of the
source, the compiler, its version and the flags, and written atomically (compile to a
temporary name, then rename).

Everything here fails soft: :func:`library` returns None (and :func:`unavailable_reason`
says why) when the kernel cannot be used, and the callers keep their torch path.
``OTGEN_FUSED=0`` in the environment disables the kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("_fused.c")
_ABI = 2                                   # must equal OTGEN_FUSED_ABI in _fused.c
TILE_T = 16                                # targets per packed panel: must equal TILE_T in _fused.c
TOPK_MAX = 16                              # largest k of the kernel: must equal TOPK_MAX in _fused.c
_FLAGS = ("-O3", "-fPIC", "-shared", "-std=gnu11", "-pthread")   # AVX2/FMA: target attributes in the source
_COMPILE_TIMEOUT_S = 120                   # a compiler that hangs must not hang the solver

_lock = threading.Lock()
_state: dict = {}                          # "lib": the loaded library or None, "why": the reason it is None


class FusedUnavailable(RuntimeError):
    """The fused kernel cannot be used here (no compiler, compile failure, no AVX2/FMA, disabled)."""


def enabled_by_env() -> bool:
    """False when ``OTGEN_FUSED`` is set to 0 / false / no / off."""
    return os.environ.get("OTGEN_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "otgen"


def _compiler() -> str | None:
    """Path of ``$CC`` (its first word) or else ``cc`` / ``gcc``; None when there is none."""
    cc = (os.environ.get("CC") or "").split()
    return (shutil.which(cc[0]) if cc else None) or shutil.which("cc") or shutil.which("gcc")


def _build(cc: str, src: bytes) -> Path:
    """Compile (or find in the cache) the library; returns its path. Raises FusedUnavailable.

    The cache folder is tried first, then a per-user folder under the temporary directory
    (a read-only home). The library is compiled under a temporary name and renamed into
    place, so concurrent processes never load a half-written file.
    """
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=_COMPILE_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise FusedUnavailable(f"cannot run the C compiler {cc}: {e}") from e
    key = hashlib.sha256(b"\0".join([src, cc.encode(), version, " ".join(_FLAGS).encode(),
                                     platform.machine().encode()])).hexdigest()[:20]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    errors = []
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"otgen-{uid}"):
        target = folder / f"fused-{key}.so"
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fused-", suffix=".so")
            os.close(fd)
        except OSError as e:
            errors.append(f"{folder}: {e}")
            continue
        try:
            proc = subprocess.run([cc, *_FLAGS, str(_SOURCE), "-o", tmp, "-lm"], capture_output=True,
                                  timeout=_COMPILE_TIMEOUT_S)
            if proc.returncode != 0:
                raise FusedUnavailable(f"{cc} failed: {proc.stderr.decode(errors='replace')[-400:]}")
            os.replace(tmp, target)
            return target
        except (OSError, subprocess.SubprocessError) as e:
            raise FusedUnavailable(f"compiling _fused.c failed: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise FusedUnavailable("no writable cache folder: " + " | ".join(errors))


def _load():
    if not enabled_by_env():
        raise FusedUnavailable("disabled by OTGEN_FUSED=0")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise FusedUnavailable(f"the kernel needs x86-64 with AVX2/FMA (this is {platform.machine()})")
    cc = _compiler()
    if cc is None:
        raise FusedUnavailable("no C compiler (cc / gcc / $CC) on PATH")
    try:
        src = _SOURCE.read_bytes()
    except OSError as e:
        raise FusedUnavailable(f"kernel source missing: {e}") from e
    path = _build(cc, src)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise FusedUnavailable(f"loading {path} failed: {e}") from e
    if lib.otgen_fused_abi() != _ABI:
        raise FusedUnavailable(f"{path} has another ABI version")
    if not lib.otgen_fused_cpu_ok():
        raise FusedUnavailable("this CPU lacks AVX2 or FMA")
    f = lib.otgen_fused_score
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                  ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def library():
    """The loaded kernel library, or None when it cannot be used (see :func:`unavailable_reason`).

    The first call compiles (about a second) or loads the cached library; the answer,
    success or failure, is kept for the process. ``OTGEN_FUSED=0`` is checked on every call.
    """
    if not enabled_by_env():
        return None
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"], _state["why"] = _load(), None
            except FusedUnavailable as e:
                _state["lib"], _state["why"] = None, str(e)
        return _state["lib"]


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None when the kernel is available)."""
    if not enabled_by_env():
        return "disabled by OTGEN_FUSED=0"
    library()
    return _state.get("why")


def pack_targets(Y: torch.Tensor) -> torch.Tensor:
    """Targets (N, d) float32 -> panels (ceil(N / TILE_T), d, TILE_T), d-major, zero-padded."""
    N, d = Y.shape
    npanels = -(-N // TILE_T)
    padded = torch.zeros(npanels * TILE_T, d, dtype=torch.float32)
    padded[:N] = Y
    return padded.view(npanels, TILE_T, d).transpose(1, 2).contiguous()


def pad_heights(h: torch.Tensor, npanels: int) -> torch.Tensor:
    """Heights (N,) -> (npanels * TILE_T,) float32, -inf on the padding targets (they never win)."""
    out = torch.full((npanels * TILE_T,), float("-inf"), dtype=torch.float32)
    out[: h.shape[0]] = h
    return out


def fused_score(X: torch.Tensor, panels: torch.Tensor, hpad: torch.Tensor, k: int, n_threads: int | None = None):
    """Best (k = 1) or k best (2 <= k <= TOPK_MAX) scores of the rows of X against packed targets.

    Parameters
    ----------
    X : (M, d) float32, C-contiguous, on the CPU.
    panels : (P, d, TILE_T) from :func:`pack_targets`.  hpad : (P * TILE_T,) from :func:`pad_heights`.
    k : 1 .. TOPK_MAX (at most the number of targets: otherwise padding fills the list).
    n_threads : threads of the kernel (default ``torch.get_num_threads()``).

    Returns
    -------
    k = 1: values (M,) float32, indices (M,) int64; k >= 2: values (M, k) (descending), indices (M, k);
    among equal values the smaller indices come first (and are the ones kept).
    Indices of targets at or beyond N (padding) cannot occur unless every real score is -inf.

    Raises
    ------
    FusedUnavailable
        No library, or the kernel refused the arguments.
    """
    lib = library()
    if lib is None:
        raise FusedUnavailable(unavailable_reason() or "unavailable")
    M, d = X.shape
    if not 1 <= k <= TOPK_MAX or X.dtype != torch.float32 or not X.is_contiguous() or X.device.type != "cpu" \
            or panels.shape[1] != d or not panels.is_contiguous() or not hpad.is_contiguous():
        raise FusedUnavailable(f"fused_score needs CPU float32 contiguous inputs and 1 <= k <= {TOPK_MAX}")
    shape = (M,) if k == 1 else (M, k)
    vals = torch.empty(shape, dtype=torch.float32)
    idx = torch.empty(shape, dtype=torch.int64)
    if M == 0:
        return vals, idx
    threads = torch.get_num_threads() if n_threads is None else n_threads
    rc = lib.otgen_fused_score(k, X.data_ptr(), M, d, panels.data_ptr(), hpad.data_ptr(), panels.shape[0],
                               max(1, int(threads)), vals.data_ptr(), idx.data_ptr())
    if rc != 0:
        raise FusedUnavailable(f"otgen_fused_score returned {rc}")
    return vals, idx
