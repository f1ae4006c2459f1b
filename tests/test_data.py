"""cnnlib.data: lookup order, verified download from a loopback mirror, caching, errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnnlib import data


def idx_payload(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST-shaped release: 6 train, 4 test images; FILES patched to it."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, (6,)),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, (4,)),
    }
    release = tmp_path / "mirror"
    release.mkdir()
    files = {}
    for name, array in arrays.items():
        payload = idx_payload(array)
        (release / name).write_bytes(gzip.compress(payload))
        files[name] = (hashlib.sha256(payload).hexdigest(), len(payload))
    monkeypatch.setattr(data, "FILES", files)
    # Nothing outside tmp_path is searched: no $CNNLIB_DATA, a fresh home, no system copy.
    monkeypatch.delenv("CNNLIB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    data._read_cached.cache_clear()
    return release, arrays


@pytest.fixture
def mirror(fake_release):
    """Serve the fake release over HTTP on 127.0.0.1; yields (url, list of requested paths)."""
    release, _ = fake_release
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(release))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    server.shutdown()
    server.server_close()


def test_download_verifies_and_caches(mirror, fake_release):
    url, requests = mirror
    _, arrays = fake_release
    (x_train, y_train), (x_test, y_test) = data.fashion_mnist(mirror=url)
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert x_train.dtype == np.uint8 and x_train.shape == (6, 28, 28) and y_train.shape == (6,)
    assert len(requests) == 4
    cached = sorted(p.name for p in data.cache_dir().iterdir())
    assert cached == sorted(data.FILES), "only the four verified files, no partial downloads"
    data.fashion_mnist(mirror=url)
    assert len(requests) == 4, "the second call reads the cache and makes no request"


def test_download_goes_to_cnnlib_data_when_set(mirror, tmp_path, monkeypatch):
    url, _ = mirror
    monkeypatch.setenv("CNNLIB_DATA", str(tmp_path / "mine"))
    data.fashion_mnist(mirror=url)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(data.FILES)


def test_corrupt_download_is_rejected_and_not_cached(mirror, fake_release):
    url, _ = mirror
    release, _ = fake_release
    name = "train-labels-idx1-ubyte.gz"
    (release / name).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(10)))
    with pytest.raises(data.ChecksumError, match=rf"checksum mismatch for .*{name}.*expected"):
        data.fashion_mnist(mirror=url)
    assert not (data.cache_dir() / name).exists()
    assert not list(data.cache_dir().glob(".*part")), "the partial file is removed"


def test_bad_download_message_does_not_ask_to_delete_what_is_gone(mirror, fake_release):
    url, _ = mirror
    release, _ = fake_release
    (release / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(20)))
    with pytest.raises(data.ChecksumError, match=r"It was downloaded from .* and deleted; nothing "
                       r"was cached\.") as err:
        data.fashion_mnist(mirror=url)
    assert "Delete" not in str(err.value)


def test_downloads_get_the_users_umask(mirror):
    url, _ = mirror
    old = os.umask(0o022)
    try:
        data.fashion_mnist(mirror=url)
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in data.cache_dir().iterdir()}
    assert modes == {0o644}


def test_a_response_larger_than_the_file_can_be_is_cut_off(mirror, fake_release):
    url, requests = mirror
    release, _ = fake_release
    name = "train-labels-idx1-ubyte.gz"
    cap = data.FILES[name][1] + (1 << 20)
    (release / name).write_bytes(bytes(cap + 4096))
    with pytest.raises(data.ChecksumError, match=rf"sent more than {cap:,d} bytes, more than "
                       rf"{name} can be; stopped, nothing was cached"):
        data.fashion_mnist(mirror=url)
    assert not list(data.cache_dir().glob("*labels*"))


def test_the_timeout_covers_the_whole_transfer(fake_release):
    """A server that trickles bytes never exceeds a per-read timeout, only a total one."""
    _, arrays = fake_release

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            for _ in range(400):
                self.wfile.write(b"x" * 64)
                self.wfile.flush()
                time.sleep(0.01)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(FileNotFoundError, match=r"failed: not finished within 0\.5 s"):
            data.fashion_mnist(mirror=f"http://127.0.0.1:{server.server_address[1]}/",
                               timeout=0.5)
        assert time.monotonic() - start < 3  # the response alone would take 4 s
    finally:
        server.shutdown()
        server.server_close()


def test_corrupt_local_file_names_file_and_digests(fake_release, monkeypatch, tmp_path):
    release, _ = fake_release
    monkeypatch.setenv("CNNLIB_DATA", str(release))
    name = "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress((release / name).read_bytes()))
    raw[100] ^= 1  # one flipped bit in one pixel
    (release / name).write_bytes(gzip.compress(bytes(raw)))
    expected = data.FILES[name][0]
    with pytest.raises(data.ChecksumError, match=rf"{name}: SHA-256 .* expected {expected}"):
        data.fashion_mnist(download=False)


def test_not_gzip_is_a_clear_error(fake_release, monkeypatch):
    release, _ = fake_release
    monkeypatch.setenv("CNNLIB_DATA", str(release))
    (release / "train-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(data.ChecksumError, match="not a readable gzip file"):
        data.fashion_mnist(download=False)


def test_lookup_order_prefers_cnnlib_data_then_cache_then_system(fake_release, monkeypatch, tmp_path):
    release, arrays = fake_release
    # A corrupt copy in each later folder: reading it would raise, so no error proves
    # the earlier folder was used.
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in data.FILES:
        (corrupt / name).write_bytes(gzip.compress(b"corrupt"))
    monkeypatch.setattr(data, "SYSTEM_DIR", corrupt)
    monkeypatch.setenv("CNNLIB_DATA", str(release))
    assert data.search_dirs() == [release, data.cache_dir(), corrupt]
    (x, _), _ = data.fashion_mnist(download=False)  # $CNNLIB_DATA beats the system copy
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte.gz"])
    monkeypatch.delenv("CNNLIB_DATA")
    data.cache_dir().parent.mkdir(parents=True)
    data.cache_dir().symlink_to(release)
    data.fashion_mnist(download=False)  # the cache beats the system copy
    data.cache_dir().unlink()
    with pytest.raises(data.ChecksumError, match="corrupt"):
        data.fashion_mnist(download=False)  # only the system copy is left


def test_offline_without_a_copy_says_how_to_get_the_data(fake_release):
    unreachable = "http://127.0.0.1:9/"  # discard port: connection refused at once
    with pytest.raises(FileNotFoundError, match=r"apt install dataset-fashion-mnist.*CNNLIB_DATA"):
        data.fashion_mnist(mirror=unreachable, timeout=5)
    with pytest.raises(FileNotFoundError, match="download=False"):
        data.fashion_mnist(download=False)


@pytest.mark.skipif(
    not all((data.SYSTEM_DIR / n).exists() for n in data.FILES),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_real_fashion_mnist_from_debian_package(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNLIB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (x_train, y_train), (x_test, y_test) = data.fashion_mnist(download=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    x_train[0, 0, 0] = 1  # callers get their own copy: the cached array is untouched
    assert data.fashion_mnist(download=False)[0][0][0, 0, 0] == 0


def test_sample_photo():
    rgb = data.sample_photo()
    gray = data.sample_photo(gray=True)
    assert rgb.shape == (600, 512, 3) and rgb.dtype == np.uint8
    assert gray.shape == (600, 512) and gray.dtype == np.uint8
    expected = np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114])
    assert np.abs(gray - expected).max() <= 1


def test_to_float():
    x = data.to_float(np.full((2, 28, 28), 255, np.uint8))
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32 and x.max() == 1.0
    with pytest.raises(TypeError, match=r"`images` must be uint8 .* got float32"):
        data.to_float(x)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\) or \(N, H, W, C\); got \(28, 28\)"):
        data.to_float(np.zeros((28, 28), np.uint8))
