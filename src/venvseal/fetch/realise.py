"""Fixed-output fetches (``[[fetch]]``): a git commit or a URL, pinned by its NAR hash.

Like Nix's fetchgit and fetchzip, what is fetched is a plain tree: a git checkout without
``.git`` (:mod:`venvseal.fetch.git`), an unpacked archive with its single top-level folder
stripped (:mod:`venvseal.fetch.download`, :mod:`venvseal.fetch.archive`), or a folder
holding one downloaded file. Its NAR hash must equal the declared one before it enters the
store, at ``make_fixed_path("<name>-src", hash)``; a valid path is reused without any network.

URLs may carry credentials (``user:password@``, ``?token=...``). They are shown only through
:func:`venvseal.netutil.redact_url`, and every text that leaves this package (errors, log
lines, git's output) is scrubbed of them.
"""

from __future__ import annotations

import lzma
import os
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from venvseal.fetch.archive import ARCHIVE_SUFFIXES, unpack
from venvseal.fetch.download import download
from venvseal.fetch.errors import FetchError, UnsafeMemberError
from venvseal.fetch.git import fetch_git
from venvseal.hashes import Sha256
from venvseal.netutil import redact_url
from venvseal.recipe.model import Fetch
from venvseal.store.core import Store, StorePath, UndeclaredHashError
from venvseal.store.fixed import FixedOutput, realise_fixed

__all__ = ["FetchError", "FetchResult", "realise_fetch"]


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchResult:
    """A realised fetch: its store path, the tree's NAR hash and whether it was reused."""

    name: str
    path: StorePath
    hash: Sha256
    reused: bool
    fetched: tuple[StorePath, ...] = ()  # paths a substituter gave (this one, or none)


def realise_fetch(fetch: Fetch, store: Store, *, recipe_file: Path, key_prefix: str,
                  index: int, network_env: Mapping[str, str]) -> FetchResult:
    """Return the store path of ``fetch``'s tree, fetching it only if it is not there.

    ``network_env`` holds what the network step borrows from the host: proxy variables
    (``http_proxy``, ``https_proxy``, ``no_proxy``) and CA bundles (``SSL_CERT_FILE``,
    ``GIT_SSL_CAINFO``). Git submodules are not fetched: list each one as its own fetch.
    """
    key = f"{key_prefix}fetch[{index}]"
    where = f"{recipe_file}: {key} ({fetch.name})"

    def build(out: Path, work: Path) -> dict[str, str]:
        return _fetch_into(out, fetch, work=work, where=where, key=key,
                           network_env=network_env, base=recipe_file.parent)

    spec = FixedOutput(
        name=f"{fetch.name}-src", declared=fetch.hash, inputs={"stage": "fetch"},
        undeclared=lambda got: UndeclaredHashError(
            recipe_file, f"{key}.hash", got,
            hint=f"in the [[{key_prefix}fetch]] named {fetch.name!r}"))
    got = realise_fixed(store, spec, build)
    return FetchResult(name=fetch.name, path=got.path, hash=got.info.nar_hash,
                       reused=got.how != "built", fetched=got.fetched)


def _git_location(git: str, base: Path) -> str:
    """A git URL as given, or a local repository path made absolute against the recipe."""
    if "://" in git or git.startswith("/") or ":" in git.split("/", 1)[0]:
        return git  # a URL, an absolute path, or scp-like host:path
    return str((base / git).resolve())


def _fetch_into(out: Path, fetch: Fetch, *, work: Path, where: str, key: str,
                network_env: Mapping[str, str], base: Path) -> dict[str, str]:
    """Fetch into ``out``; what was fetched, with credentials redacted (for the store)."""
    if fetch.git is not None:
        if fetch.rev is None:
            raise FetchError(where, "git needs a rev", f"add {key}.rev, a full commit id")
        fetch_git(_git_location(fetch.git, base), fetch.rev, out, work=work, where=where,
                  key=key, network_env=network_env)
        return {"git": redact_url(fetch.git), "rev": fetch.rev}
    if fetch.url is not None:
        _fetch_url(fetch.url, out, work=work, where=where, network_env=network_env)
        return {"url": redact_url(fetch.url)}
    raise FetchError(where, "neither git nor url is given", f"add {key}.git or {key}.url")


def _fetch_url(url: str, out: Path, *, work: Path, where: str,
               network_env: Mapping[str, str]) -> None:
    """Download ``url``; unpack an archive into ``out``, else put the file in ``out``."""
    path = urlsplit(url).path
    suffix = next((s for s in ARCHIVE_SUFFIXES if path.lower().endswith(s)), None)
    if suffix is None:
        out.mkdir()
        download(url, out / _file_name(path), where=where, network_env=network_env)
        return
    archive = work / f"archive{suffix}"
    download(url, archive, where=where, network_env=network_env)
    unpacked = work / "unpacked"
    try:
        unpack(archive, unpacked)
    except UnsafeMemberError as err:
        raise FetchError(where, f"the archive from {redact_url(url)} is unsafe: {err}",
                         "venvseal does not unpack it; check the URL") from err
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # the file system's fault (disk full, ...), not the archive's
        raise FetchError(where, f"cannot unpack {redact_url(url)}: {err}",
                         f"check that the URL gives a valid {suffix} archive") from err
    # fetchzip's stripRoot: an archive of one top-level folder yields that folder's content.
    entries = os.listdir(unpacked)
    top = unpacked / entries[0] if len(entries) == 1 else None
    if top is not None and top.is_dir() and not top.is_symlink():
        os.rename(top, out)
    else:
        os.rename(unpacked, out)


def _file_name(url_path: str) -> str:
    """The URL's last path segment, decoded; ``download`` if that is not a file name."""
    name = posixpath.basename(unquote(url_path))
    return name if name not in ("", ".", "..") and "\0" not in name else "download"
