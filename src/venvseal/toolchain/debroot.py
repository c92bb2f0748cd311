"""Pinned Debian roots: locked with mmdebstrap, made again from exactly the locked ``.deb``s.

Locking runs mmdebstrap once against the machine's mirror and keeps what it installed: every
``.deb`` (checked against the sha256 of the archive's signed ``Packages`` index) and their
names and versions (:mod:`venvseal.toolchain.debpin`). The ``.deb`` files become a store path
of their own, fixed-output (named by its declared NAR hash), so the OCI cache shares it like
the deps venv, and another machine makes the same root after the mirror dropped those versions.

The root itself is always made from that path, never from the mirror: mmdebstrap installs
from a local repository holding only the locked files, with SOURCE_DATE_EPOCH set, and what
would differ between two runs or two machines (device nodes, logs, apt's lists, the host's
resolver and host name) is removed. Two roots made from one lock have one NAR hash (tested).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from venvseal import process
from venvseal.errors import VenvsealError
from venvseal.recipe.model import DebianSpec
from venvseal.store.core import Store, StorePath
from venvseal.store.nar import nar_hash
from venvseal.toolchain.debian import mmdebstrap, prune, tool_env
from venvseal.toolchain.debpin import DebianPin, PinnedDeb, file_sha256, pinned_debs

ROOT_VERSION = "debian-pinned-1"
_DOWNLOAD_TIMEOUT = 120  # seconds per read


class DebianPinError(VenvsealError):
    """A pinned Debian root cannot be made."""


def lock(spec: DebianSpec, *, mirror: str, work: Path,
         on_step: Callable[[str], None]) -> tuple[DebianPin, Path]:
    """Resolve ``spec`` against ``mirror`` now; the pin and a folder holding its ``.deb``s."""
    on_step(f"resolving the Debian {spec.suite} root against {mirror} with mmdebstrap "
            f"({len(spec.packages)} packages)")
    archives, lists, installed = work / "archives", work / "lists", work / "installed"
    # copy-out: mmdebstrap itself copies them out, as the user who runs it; a shell hook runs
    # as the chroot's root, which in unshare mode (a user's run) cannot enter ``work``.
    hooks = [f"copy-out /var/cache/apt/archives /var/lib/apt/lists {work}",
             'dpkg-query --admindir="$1"/var/lib/dpkg -W '
             "-f='${Package}\\t${Version}\\t${Architecture}\\n' > \"$1\"/tmp/installed",
             f"copy-out /tmp/installed {work}"]
    mmdebstrap(spec, work / "root", mirror, hooks=hooks, keep_debs=True)
    rows = [tuple(line.split("\t")) for line in installed.read_text().splitlines() if line]
    indexes = [p.read_text(encoding="utf-8", errors="replace")
               for p in sorted(lists.glob("*_Packages"))]
    try:
        debs = pinned_debs([(r[0], r[1], r[2]) for r in rows], indexes)
    except ValueError as err:
        raise DebianPinError(f"cannot pin the Debian {spec.suite} root: {err}") from err
    by_sha = {file_sha256(p): p for p in archives.glob("*.deb")}
    folder = work / "debs"
    folder.mkdir()
    for deb in debs:
        found = by_sha.get(deb.sha256)
        if found is None:
            raise DebianPinError(f"mmdebstrap kept no .deb of {deb.name} {deb.version} "
                                 "matching the archive's index; try again")
        shutil.copyfile(found, folder / deb.file_name)
    pin = DebianPin(suite=spec.suite, variant=spec.variant,
                    packages=tuple(sorted(spec.packages)),
                    debs_hash=nar_hash(folder).hash, debs=debs)
    return pin, folder


def debs_path(pin: DebianPin, store: Store) -> StorePath:
    return store.make_fixed_path(f"debian-{pin.suite}-debs", pin.debs_hash)


def realise_debs(pin: DebianPin, store: Store, *, mirror: str | None,
                 local: Path | None = None) -> StorePath:
    """The store path holding every pinned ``.deb``: kept, from a cache, or downloaded.

    ``local`` is a folder that already holds them (just locked). Otherwise each file is
    downloaded from ``mirror`` by its archive path and checked against its sha256.
    """
    path = debs_path(pin, store)

    def produce(out: Path) -> None:
        out.mkdir()
        for deb in pin.debs:
            if local is not None:
                shutil.copyfile(local / deb.file_name, out / deb.file_name)
            else:
                _download(deb, mirror, out / deb.file_name, pin)

    store.realise(path, produce, expected=pin.debs_hash,
                  inputs={"stage": "debian-debs", "suite": pin.suite})
    return path


def _download(deb: PinnedDeb, mirror: str | None, dest: Path, pin: DebianPin) -> None:
    ways_out = ("fetch the pinned files from a cache (--substituter oci://HOST/REPO), point "
                "VENVSEAL_DEBIAN_MIRROR at a mirror or snapshot that still has them, or pin "
                "today's versions with 'venvseal toolchain --update-lock'")
    if mirror is None:
        raise DebianPinError(f"no mirror to download {deb.name} {deb.version} from; {ways_out}")
    url = f"{mirror.rstrip('/')}/{deb.filename}"
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as resp, \
                dest.open("wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise DebianPinError(
            f"pinned package {deb.name} {deb.version} of the Debian {pin.suite} toolchain "
            f"is not on the mirror ({deb.filename}: {reason}) nor in any cache; "
            f"{ways_out}") from err
    if file_sha256(dest) != deb.sha256:
        raise DebianPinError(f"{url} does not have the sha256 pinned for {deb.name} "
                             f"{deb.version}; the mirror or the lock was tampered with")


def root_name(pin: DebianPin) -> str:
    return f"debian-{pin.suite}-{pin.variant}-root"


def realise_root(spec: DebianSpec, pin: DebianPin, store: Store, *, mirror: str | None,
                 on_step: Callable[[str], None], local: Path | None = None) -> StorePath:
    """The pinned root's store path, made from the pinned ``.deb``s the first time."""
    path = store.make_path(root_name(pin), f"{ROOT_VERSION}:{pin.fingerprint()}")
    if store.pin(path) is not None:  # valid, and kept from a concurrent gc from now on
        return path
    debs = realise_debs(pin, store, mirror=mirror, local=local)

    def produce(out: Path) -> None:
        on_step(f"making the pinned Debian {pin.suite} root from {len(pin.debs)} .deb files "
                "with mmdebstrap")
        with tempfile.TemporaryDirectory(prefix="venvseal-repo-") as tmp:
            source = _local_repo(pin, Path(debs), Path(tmp))
            mmdebstrap(spec, out, source, hooks=[])
        prune(out)

    store.realise(path, produce, inputs={"stage": "toolchain", "pinned": pin.fingerprint()})
    return path


def _local_repo(pin: DebianPin, debs: Path, repo: Path) -> str:
    """A one-suite apt repository in ``repo`` serving exactly ``debs``; its sources line."""
    tool = process.find_tool("apt-ftparchive", "apt-utils")
    pool = repo / "pool"
    pool.mkdir()
    # Linked or copied, not symlinked, in a folder any user may read: in a user's run
    # (mmdebstrap's unshare mode) apt reads it as the namespace's root, a subordinate id
    # that cannot enter a store under a private home folder.
    repo.chmod(0o755)
    for deb in pin.debs:
        try:
            os.link(debs / deb.file_name, pool / deb.file_name)
        except OSError:  # another file system
            shutil.copyfile(debs / deb.file_name, pool / deb.file_name)
    arch = pin.debs[0].architecture if pin.debs else "amd64"
    index = repo / "dists" / pin.suite / "main" / f"binary-{arch}"
    index.mkdir(parents=True)
    # apt-ftparchive writes indexes to stdout only; a shell sends them to their files.
    process.run(["sh", "-c", f'"$0" packages pool > {shlex.quote(str(index / "Packages"))}', tool],
                what="apt-ftparchive packages", cwd=repo, env=tool_env())
    opts = [f"-oAPT::FTPArchive::Release::{k}={v}" for k, v in (
        ("Suite", pin.suite), ("Codename", pin.suite), ("Components", "main"),
        ("Architectures", arch))]
    release = repo / "dists" / pin.suite / "Release"
    process.run(["sh", "-c", f'"$0" "$@" > {shlex.quote(str(release))}', tool, *opts, "release",
                 f"dists/{pin.suite}"], what="apt-ftparchive release", cwd=repo, env=tool_env())
    return f"deb [trusted=yes] copy://{repo} {pin.suite} main"
