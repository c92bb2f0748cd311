"""uv's cache split per toolchain: downloads shared, builds not."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from venvseal.deps import uvcache

PY = PurePosixPath("/usr/bin/python3.11")
PATH = (PurePosixPath("/usr/bin"),)


def key(identity: str = "a" * 64, **env: str) -> str:
    return uvcache.build_key(identity, python=PY, path=PATH, env=env)


def test_build_key_follows_the_toolchain_and_the_build_environment() -> None:
    assert key() == key()
    assert key("b" * 64) != key()
    assert key(CFLAGS="-O1") != key()
    assert uvcache.build_key("a" * 64, python=PurePosixPath("/usr/bin/python3.12"), path=PATH,
                             env={}) != key()
    assert len(key()) == 32


def test_prepare_links_the_download_buckets_only(tmp_path: Path) -> None:
    cache = tmp_path / "uv"
    cache.mkdir()
    rel = uvcache.prepare(cache, key())
    own = cache / str(rel)
    assert rel == PurePosixPath("venvseal-builds", key())
    for bucket in uvcache.SHARED_BUCKETS:
        assert (cache / bucket).is_dir() and not (cache / bucket).is_symlink()
        assert os.readlink(own / bucket) == f"../../{bucket}"
    # What uv builds is not shared: no sdists bucket at the top to link, none linked.
    assert not [p for p in own.iterdir() if not p.is_symlink()]
    assert not any(b.startswith(("sdists-", "builds-", "interpreter-"))
                   for b in uvcache.SHARED_BUCKETS)
    # Again (another run): nothing changes; another toolchain gets its own folder.
    assert uvcache.prepare(cache, key()) == rel
    other = uvcache.prepare(cache, key("b" * 64))
    assert other != rel
    assert (cache / str(other) / "wheels-v8").resolve() == (own / "wheels-v8").resolve()


def test_a_private_bucket_is_kept(tmp_path: Path) -> None:
    # A bucket uv made inside a toolchain's folder before it was known to be shared stays.
    cache = tmp_path / "uv"
    own = cache / uvcache.BUILDS_DIR / key()
    (own / "wheels-v8").mkdir(parents=True)
    uvcache.prepare(cache, key())
    assert (own / "wheels-v8").is_dir() and not (own / "wheels-v8").is_symlink()
