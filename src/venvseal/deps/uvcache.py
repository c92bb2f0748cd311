"""uv's cache, split so that no wheel built with one toolchain is used with another.

uv keys the wheels it builds from an sdist (or a local folder, or a git checkout) by that
source alone, not by the headers, libraries and compilers they were built with: a cache
filled before the host's libpq-dev moved from 15.18 to 15.20 kept handing out the psycopg-c
wheel compiled against 15.18, so a warm and a cold build gave different hashes (issue 15).

The cache folder venvseal is given is therefore laid out as::

    <uv cache>/wheels-v8, archive-v0, simple-v28, git-v0, ...   shared: what uv downloads
    <uv cache>/venvseal-builds/<build key>/                   uv's cache dir for one toolchain
        wheels-v8 -> ../../wheels-v8                           (a shared bucket, linked)
        sdists-v11, builds-v0, interpreter-v5, ...             its own: what uv builds

The build key is a digest of the toolchain's identity (its package database and
interpreter) and of what else reaches a compiler from the recipe (``[deps] env``, PATH), so a
changed toolchain gets a cold build cache while downloads stay warm. Only buckets that hold
downloads are shared, named for the pinned uv (uv: crates/uv-cache/src/lib.rs,
``CacheBucket``): wheels from an index or URL (``wheels-v8``, which never holds built wheels),
unpacked archives (``archive-v0``, reached only through a pointer in another bucket, so a
built wheel's archive is found only from its own toolchain's ``sdists-v11``), index pages and
git checkouts. A bucket another uv version names differently is private to each toolchain:
safe, only slower (tests/deps/test_toolchain_moves.py says when the list is out of date).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

# uv 0.13's buckets that hold only what uv downloads (and unpacks): the same for every
# toolchain. Every other bucket (sdists-v11: built wheels; builds-v0; interpreter-v5, keyed by
# a path that names another file in each toolchain root) is per toolchain.
SHARED_BUCKETS = ("wheels-v8", "archive-v0", "simple-v28", "flat-index-v7", "git-v2")
BUILDS_DIR = "venvseal-builds"


def build_key(identity: str, *, python: PurePosixPath, path: Sequence[PurePosixPath],
              env: Mapping[str, str]) -> str:
    """The digest that names one toolchain's build cache (32 hex digits)."""
    doc = {"toolchain": identity, "python": str(python), "path": [str(p) for p in path],
           "env": dict(sorted(env.items()))}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def prepare(uv_cache: Path, key: str) -> PurePosixPath:
    """Make ``key``'s cache folder with links to the shared buckets; its path relative to
    ``uv_cache`` (uv's cache dir is then ``<where uv_cache is mounted>/<that path>``)."""
    rel = PurePosixPath(BUILDS_DIR, key)
    own = uv_cache / BUILDS_DIR / key
    own.mkdir(parents=True, exist_ok=True)
    for bucket in SHARED_BUCKETS:
        (uv_cache / bucket).mkdir(exist_ok=True)
        link = own / bucket
        if not os.path.lexists(link):
            with contextlib.suppress(FileExistsError):  # another venvseal made it just now
                os.symlink(PurePosixPath("..", "..", bucket), link)
    return rel
