"""Debian toolchains: a root file system made by mmdebstrap, kept in the store.

``[toolchain] debian = { suite, packages, variant }`` names a root file system. Unpinned, it
is made once with mmdebstrap from the mirror the host's apt already uses (1.8x faster than
debootstrap here: benchmarks/debian_root.py), pruned of what only a
running system needs (device nodes, caches, logs), sealed into the store, and reused by both
stages as the sandbox root. Its identity (the installed package versions, from the dpkg
database) is part of every key, so a toolchain made on another day gives other store paths.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from venvseal import fsutil, process
from venvseal.errors import CommandError, VenvsealError
from venvseal.recipe.model import DebianSpec
from venvseal.store.core import Store, StorePath
from venvseal.toolchain.deb822 import stanzas

APT_DIR = Path("/etc/apt")
# Only a booted system needs these; the sandbox supplies /dev, /proc and /tmp itself.
PRUNED = ("dev", "proc", "sys", "run", "tmp", "var/cache/apt", "var/lib/apt/lists",
          "var/log", "var/cache/debconf", "var/cache/ldconfig")
# What mmdebstrap leaves that depends on the run or the host, not on the packages: removed,
# or emptied where the sandbox mounts the host's over it (a mount point must exist).
_VOLATILE = ("etc/apt/sources.list", "etc/apt/sources.list.d", "var/lib/apt/extended_states")
_EMPTIED = ("etc/hostname", "etc/resolv.conf")
TOOLCHAIN_VERSION = "debian-2"  # 2: made with mmdebstrap (1: debootstrap)
SOURCE_DATE_EPOCH = "315532800"


class DebianError(VenvsealError):
    """The Debian root file system cannot be made."""


def _deb822_mirrors(text: str) -> Iterator[tuple[str, list[str]]]:
    for fields in stanzas(text):
        if "deb" in fields.get("types", "").split():
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def _one_line_mirrors(text: str) -> Iterator[tuple[str, list[str]]]:
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 3 and parts[0] == "deb":
            rest = [p for p in parts[1:] if not p.startswith("[")]
            if len(rest) >= 2:
                yield rest[0], [rest[1]]


def apt_mirror(apt_dir: Path = APT_DIR) -> str:
    """The Debian mirror the host's apt uses (not its security archive)."""
    candidates: list[tuple[str, list[str]]] = []
    listing = apt_dir / "sources.list"
    if listing.is_file():
        candidates += _one_line_mirrors(listing.read_text(encoding="utf-8", errors="replace"))
    parts = apt_dir / "sources.list.d"
    for file in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        candidates += _deb822_mirrors(file.read_text(encoding="utf-8", errors="replace"))
    for file in sorted(parts.glob("*.list")) if parts.is_dir() else []:
        candidates += _one_line_mirrors(file.read_text(encoding="utf-8", errors="replace"))
    for uri, suites in candidates:
        if not any(s.endswith("-security") for s in suites) and "security" not in uri:
            return uri
    raise DebianError(f"no Debian mirror found in {apt_dir}/sources.list or sources.list.d; "
                      "configure apt, or use [toolchain] root = a prepared root folder")


def fingerprint(spec: DebianSpec) -> str:
    """What names the toolchain's store path: suite, variant and the sorted package list."""
    return json.dumps({"v": TOOLCHAIN_VERSION, "suite": spec.suite, "variant": spec.variant,
                       "packages": sorted(spec.packages)}, sort_keys=True)


def store_name(spec: DebianSpec) -> str:
    return f"debian-{spec.suite}-{spec.variant}-root"


def prune(root: Path) -> None:
    """Empty what only a running system needs, drop what depends on the host or the run
    rather than on the packages, and drop special files the store refuses."""
    for rel in PRUNED:
        target = root / rel
        if target.is_dir() and not target.is_symlink():
            fsutil.remove_tree(target)
            target.mkdir(mode=0o755)
    for rel in _VOLATILE:
        target = root / rel
        if target.is_dir() and not target.is_symlink():
            fsutil.remove_tree(target)
        elif target.is_symlink() or target.exists():
            target.unlink()
    for rel in _EMPTIED:
        target = root / rel
        if target.is_symlink() or target.exists():
            target.unlink()
            target.write_bytes(b"")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if not (os.path.islink(path) or (mode & 0o170000) == 0o100000):
                path.unlink()  # sockets, fifos, devices: a build never needs them on disk
        dirnames.sort()


def tool_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root",
            "DEBIAN_FRONTEND": "noninteractive", "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}


def unprivileged_problem(user: str, *, subuid: str, subgid: str,
                         newuidmap: str | None) -> str | None:
    """Why ``user`` (not root) cannot run mmdebstrap's unshare mode, or None if it can: the
    mode maps the root file system's owners to the user's subordinate ids (newuidmap)."""
    def has_range(text: str) -> bool:
        return any(line.split(":")[0] == user for line in text.splitlines())

    missing = [what for what, ok in (("newuidmap (Debian: apt-get install uidmap)",
                                      newuidmap is not None),
                                     (f"a range in /etc/subuid for {user}", has_range(subuid)),
                                     (f"a range in /etc/subgid for {user}", has_range(subgid)))
               if not ok]
    if not missing:
        return None
    fixes = ([] if newuidmap else ["`apt-get install uidmap`"]) + (
        [] if has_range(subuid) and has_range(subgid) else
        [f"`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"])
    return (f"making a Debian root as the user {user} needs mmdebstrap's unshare mode, which "
            f"needs {' and '.join(missing)}; an administrator can run {' and '.join(fixes)}; "
            "or run as root, or use [toolchain] root = a prepared root folder")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def mmdebstrap(spec: DebianSpec, target: Path, source: str, *, hooks: list[str],
               keep_debs: bool = False) -> None:
    """Make ``target`` with mmdebstrap: as root directly, as another user in its unshare mode
    (as a tarball the user owns, then unpacked: unshare mode would leave a folder owned by
    the user's subordinate ids, which the user could not seal or remove)."""
    tool = process.find_tool("mmdebstrap", "mmdebstrap")
    if os.geteuid() == 0:
        _mmdebstrap(tool, spec, target, source, hooks=hooks, keep_debs=keep_debs)
        return
    user = pwd.getpwuid(os.geteuid()).pw_name
    problem = unprivileged_problem(user, subuid=_read("/etc/subuid"),
                                   subgid=_read("/etc/subgid"),
                                   newuidmap=shutil.which("newuidmap"))
    if problem:
        raise DebianError(problem)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".venvseal-rootfs-") as tmp:
        tarball = Path(tmp) / "root.tar"
        _mmdebstrap(tool, spec, tarball, source, hooks=hooks, keep_debs=keep_debs,
                    mode="unshare")
        target.mkdir(exist_ok=True)
        # Device nodes cannot be made without privileges; prune() drops /dev anyway.
        process.run(["tar", "--extract", "--file", str(tarball), "--directory", str(target),
                     "--no-same-owner", "--exclude=./dev/*"], what="unpacking the root")


def _mmdebstrap(tool: str, spec: DebianSpec, target: Path, source: str, *, hooks: list[str],
                keep_debs: bool, mode: str = "root") -> None:
    # Valid-Until is not checked (debootstrap never did): a mirror or snapshot serving an
    # older sid has an expired Release file; its signature is still checked, and a pinned
    # root's every .deb is checked against the sha256 in venvseal.lock.
    argv = [tool, f"--variant={spec.variant}", "--components=main", f"--mode={mode}",
            '--aptopt=Acquire::Check-Valid-Until "false"']
    if keep_debs:  # the essential set's .debs too, which mmdebstrap removes after unpacking
        argv += ["--skip=download/empty", "--skip=essential/unlink"]
    if spec.packages:
        argv.append("--include=" + ",".join(sorted(spec.packages)))
    argv += [f"--customize-hook={hook}" for hook in hooks]
    argv += [spec.suite, str(target), source]
    try:
        process.run(argv, what=f"mmdebstrap {spec.suite}", env=tool_env())
    except CommandError as err:
        missing = [ln.strip() for ln in err.output_tail.splitlines()
                   if "Unable to locate package" in ln or "has no installation candidate" in ln]
        if missing:  # the one line that matters; the rest is apt's and mmdebstrap's noise
            raise DebianError(f"mmdebstrap of Debian {spec.suite} failed: {missing[0]}; check "
                              "[toolchain] debian.packages names (apt-cache policy NAME)"
                              ) from err
        raise DebianError(
            f"mmdebstrap of Debian {spec.suite} failed; check [toolchain] debian.packages "
            f"(apt-cache policy NAME) and the network:\n"
            f"{err.output_tail}") from err



def debootstrap(spec: DebianSpec, target: Path, *, mirror: str) -> None:
    """Run debootstrap (on the host, as root, with network) into ``target``."""
    tool = process.find_tool("debootstrap", "debootstrap")
    argv = [tool, f"--variant={spec.variant}", "--components=main"]
    if spec.packages:
        argv.append("--include=" + ",".join(sorted(spec.packages)))
    argv += [spec.suite, str(target), mirror]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "DEBIAN_FRONTEND":
           "noninteractive", "HOME": "/root"}
    try:
        process.run(argv, what=f"debootstrap {spec.suite}", env=env)
    except CommandError as err:
        missing = [ln.strip() for ln in err.output_tail.splitlines()
                   if "Couldn't find these debs" in ln]
        if missing:  # the one line that matters; the rest is debootstrap's progress
            raise DebianError(f"debootstrap of Debian {spec.suite} failed: {missing[-1]}; "
                              "check [toolchain] debian.packages names (apt-cache policy "
                              "NAME)") from err
        raise DebianError(f"debootstrap of Debian {spec.suite} failed; check the network, the "
                          f"suite name and that you run as root:\n{err.output_tail}") from err


def realise(spec: DebianSpec, store: Store, *, on_step: Callable[[str], None],
            mirror: str | None = None) -> StorePath:
    """The toolchain's store path, made with debootstrap the first time it is asked for."""
    path = store.make_path(store_name(spec), fingerprint(spec))
    if store.pin(path) is not None:  # valid, and kept from a concurrent gc from now on
        return path
    chosen = mirror or apt_mirror()

    def produce(out: Path) -> None:
        on_step(f"making the Debian {spec.suite} root file system with mmdebstrap "
                f"({len(spec.packages)} packages; about a minute)")
        mmdebstrap(spec, out, chosen, hooks=[])
        prune(out)

    store.realise(path, produce, inputs={"stage": "toolchain", "debian": json.loads(
        fingerprint(spec))})
    return path
