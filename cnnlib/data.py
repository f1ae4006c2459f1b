"""Real data, offline when possible: Fashion-MNIST and the photo matplotlib ships.

Introduced in chapter 00 ("The seed, revisited"); used by every chapter that trains.

`fashion_mnist()` looks for the four official files in this order:

1. the folder named by the environment variable ``CNNLIB_DATA``;
2. the cache, ``~/.cache/cnnlib/fashion-mnist``;
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package);
4. otherwise it downloads them from the dataset's official HTTPS mirror into the cache
   (or into ``CNNLIB_DATA`` when that is set), verified, written atomically.

Every file is verified by the SHA-256 of its *decompressed* IDX payload, wherever it
comes from. The payload, not the .gz, because Debian recompresses the archives: the
bytes inside are identical to the official release, the gzip wrappers are not.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

#: The dataset's official mirror (the files published in the Fashion-MNIST repository).
MIRROR = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"

#: Where Debian's `dataset-fashion-mnist` package installs the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: File name -> (SHA-256 of the decompressed IDX payload, payload size in bytes).
FILES = {
    "train-images-idx3-ubyte.gz": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47_040_016,
    ),
    "train-labels-idx1-ubyte.gz": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60_008,
    ),
    "t10k-images-idx3-ubyte.gz": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7_840_016,
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10_008,
    ),
}

#: The ten classes, in label order.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class ChecksumError(ValueError):
    """A data file's content does not match its published SHA-256."""


def cache_dir() -> Path:
    """The download cache, ``~/.cache/cnnlib/fashion-mnist``."""
    return Path.home() / ".cache" / "cnnlib" / "fashion-mnist"


def search_dirs() -> list[Path]:
    """The folders searched for the four files, in order."""
    dirs = []
    if os.environ.get("CNNLIB_DATA"):
        dirs.append(Path(os.environ["CNNLIB_DATA"]).expanduser())
    dirs += [cache_dir(), SYSTEM_DIR]
    return dirs


def fashion_mnist(
    *, download: bool = True, mirror: str = MIRROR, timeout: float = 60.0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) as NumPy arrays.

    Args:
        download: fetch missing files from `mirror` into the cache. With False, a
            missing file raises FileNotFoundError instead.
        mirror: base URL the four file names are appended to.
        timeout: seconds a whole download may take before it is given up.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: images uint8 of shape (60000, 28, 28)
        and (10000, 28, 28), labels uint8 of shape (60000,) and (10000,) in 0..9
        (names in `CLASS_NAMES`).

    Raises:
        FileNotFoundError: a file is missing and cannot be downloaded; the message
            lists the folders searched and three ways to get the data.
        ChecksumError: a file's content does not match its SHA-256 (the message names
            the file and both digests); no array is returned from a corrupt file.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = fashion_mnist()
        >>> x_train.shape, x_train.dtype
        ((60000, 28, 28), dtype('uint8'))
    """
    arrays = [_load(name, download, mirror, timeout) for name in FILES]
    x_train, y_train, x_test, y_test = arrays
    return (x_train, y_train), (x_test, y_test)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1], in the batched NHWC layout cnnlib expects.

    Args:
        images: uint8 array of shape (N, H, W) (one channel added) or (N, H, W, C).

    Returns:
        float32 array of shape (N, H, W, 1) or (N, H, W, C).

    Example:
        >>> to_float(np.zeros((2, 28, 28), np.uint8)).shape
        (2, 28, 28, 1)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(
            f"to_float: `images` must be uint8 (values 0..255); got {images.dtype}. "
            f"Float images need no conversion; pass them to the model directly."
        )
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4:
        raise ValueError(
            f"to_float: `images` must have shape (N, H, W) or (N, H, W, C); got "
            f"{images.shape}. Add a batch axis with images[None]."
        )
    return images.astype(np.float32) / np.float32(255.0)


def sample_photo(gray: bool = False) -> np.ndarray:
    """The photo of Grace Hopper that matplotlib ships (no download needed).

    Args:
        gray: return luminance (ITU-R 601 weights) instead of RGB.

    Returns:
        uint8 array of shape (600, 512, 3), or (600, 512) with ``gray=True``.

    Example:
        >>> sample_photo().shape
        (600, 512, 3)
    """
    from matplotlib import cbook
    from matplotlib import image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = mpimg.imread(f, format="jpg")
    if not gray:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    luminance = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(luminance), 0, 255).astype(np.uint8)


def _load(name: str, download: bool, mirror: str, timeout: float) -> np.ndarray:
    for folder in search_dirs():
        path = folder / name
        if path.is_file():
            return _read_verified(path)
    if not download:
        raise FileNotFoundError(_missing_message(name, "download=False"))
    return _read_verified(_download(name, mirror, timeout))


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    array = _parse_idx(_payload(Path(path), Path(path).name))
    array.setflags(write=False)  # shared between calls: copy before modifying
    return array


def _read_verified(path: Path) -> np.ndarray:
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size).copy()


def _payload(path: Path, name: str, fix: str | None = None) -> bytes:
    """Decompress `path` (at most the expected size of `name`) and verify its SHA-256.

    `fix` is what the message tells the reader to do; by default, delete the file and load
    again.
    """
    expected_sha, expected_size = FILES[name]
    fix = fix or f"Delete {path} and call fashion_mnist() again to fetch a fresh copy."
    try:
        with gzip.open(path, "rb") as f:
            payload = f.read(expected_size + 1)  # +1: a longer file is detected, not truncated
    except (OSError, EOFError) as err:
        raise ChecksumError(
            f"fashion_mnist: {path} is not a readable gzip file ({err}). {fix}"
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha:
        raise ChecksumError(
            f"fashion_mnist: checksum mismatch for {path}: SHA-256 of its content is "
            f"{digest}, expected {expected_sha}. The file is corrupt or not the official "
            f"release. {fix}"
        )
    return payload


def _parse_idx(payload: bytes) -> np.ndarray:
    """Parse the IDX format: magic (0, 0, dtype=0x08 uint8, ndim), big-endian dims, data."""
    ndim = payload[3]
    dims = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def _download(name: str, mirror: str, timeout: float) -> Path:
    """Fetch `name` into the writable data folder, verify it, then move it into place.

    `timeout` bounds the whole transfer, not each socket read; at most the expected
    decompressed size plus 1 MiB is read (a gzip file is never larger than its payload by more
    than a header), so a wrong or endless response cannot fill the disk before the hash check.
    The file gets the permissions of any new file (0644 under the usual umask 022), so a shared
    data folder stays readable to others.
    """
    target_dir = Path(os.environ.get("CNNLIB_DATA") or cache_dir()).expanduser()
    target_dir.mkdir(parents=True, exist_ok=True)
    url = mirror.rstrip("/") + "/" + name
    cap = FILES[name][1] + (1 << 20)
    tmp_path = target_dir / f".{name}.{uuid.uuid4().hex}.part"
    deadline = time.monotonic() + timeout
    try:
        with os.fdopen(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    received = 0
                    while chunk := response.read1(1 << 16):  # what has arrived, <= 64 KiB
                        received += len(chunk)
                        if received > cap:
                            raise ChecksumError(
                                f"fashion_mnist: {url} sent more than {cap:,d} bytes, more than "
                                f"{name} can be; stopped, nothing was cached. Check the mirror "
                                f"URL ({mirror})."
                            )
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"not finished within {timeout} s")
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as err:
                reason = f"download from {url} failed: {err}"
                raise FileNotFoundError(_missing_message(name, reason)) from None
        _payload(tmp_path, name, fix=(
            f"It was downloaded from {url} and deleted; nothing was cached. Try again later, or "
            f"get the files another way (see the fashion_mnist docstring)."))
        os.replace(tmp_path, target_dir / name)  # atomic: readers never see a partial file
    finally:
        tmp_path.unlink(missing_ok=True)
    return target_dir / name


def _missing_message(name: str, reason: str) -> str:
    searched = ", ".join(str(d) for d in search_dirs())
    return (
        f"fashion_mnist: {name} was not found ({reason}). Searched: {searched}. "
        f"Get the data one of three ways: (1) `sudo apt install dataset-fashion-mnist` "
        f"(Debian/Ubuntu); (2) download the four .gz files from {MIRROR} into a folder "
        f"and set CNNLIB_DATA to it; (3) connect to the internet and call fashion_mnist() "
        f"again to download them into {cache_dir()}."
    )
