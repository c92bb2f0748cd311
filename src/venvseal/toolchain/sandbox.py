"""The build sandbox: bubblewrap with a fixed file system layout and a cleared environment.

Every build step sees the same paths whatever the host: the toolchain's root file system
read-only as ``/``, and everything build-time under :data:`BUILD_ROOT`. Network exists only
when the spec asks for it (the fixed-output stages).

Every step runs as :data:`SANDBOX_UID` in its own user namespace, with no capabilities, even
when venvseal runs as root: an sdist's ``setup.py`` is not root. Its ``/etc`` is curated
(:data:`ETC_ENTRIES`): the loader cache, name service and locale files the toolchain needs,
a ``passwd``/``group`` naming only the sandbox user, and the resolver and CA certificates
only in networked steps; never ``shadow``, ``gshadow``, ssh keys, sudoers or git/pip
configuration.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path, PurePosixPath

from venvseal import process
from venvseal.errors import CommandError, UsageError
from venvseal.netutil import scrub
from venvseal.process import Completed

# Everything a build may write or refer to lives here; reference scanning looks for it.
BUILD_ROOT = PurePosixPath("/venvseal-build")
SRC_DIR = BUILD_ROOT / "src"
OUT_DIR = BUILD_ROOT / "out"
CACHE_DIR = BUILD_ROOT / "cache"
HOME_DIR = BUILD_ROOT / "home"
TMP_DIR = BUILD_ROOT / "tmp"
TOOLS_DIR = BUILD_ROOT / "tools"
CA_FILE = BUILD_ROOT / "etc" / "ca.crt"

# Top-level folders of the toolchain root that build steps may see. Home folders, /var,
# /srv, /mnt and the like are left out so a host root never exposes the user's files.
ROOT_ENTRIES = ("bin", "etc", "lib", "lib32", "lib64", "libx32", "opt", "sbin", "usr")

# The user every build step runs as (bwrap maps the caller's uid to it). A file it writes on
# a writable mount is owned on the host by whoever runs venvseal, as before.
SANDBOX_UID = 1000
SANDBOX_USER = "venvseal"
PASSWD = f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_UID}::{HOME_DIR}:/bin/sh\n"
GROUP = f"{SANDBOX_USER}:x:{SANDBOX_UID}:\n"

# What of the toolchain root's /etc a step sees: the dynamic loader's cache (without it the
# multiarch libraries are not found), Debian's alternatives (cc, c++, ...), name service and
# network database files, time zone, locale aliases, platform identification and Debian
# python's sitecustomize. Nothing holding a secret or a host's configuration of tools.
ETC_ENTRIES = ("alternatives", "debian_version", "gai.conf", "host.conf", "hosts",
               "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias", "localtime",
               "mime.types", "networks", "nsswitch.conf", "os-release", "protocols",
               "python3", "services", "ssl/openssl.cnf", "timezone")
ETC_PATTERNS = ("python3.*",)  # Debian's /etc/python3.X/sitecustomize.py
# Only in networked steps: CA certificates (the resolver comes from SandboxSpec.resolv_conf).
ETC_NETWORK_ENTRIES = ("ca-certificates.conf", "ssl/certs")

# 1980-01-01: the earliest time a zip file can store; wheels and archives accept it.
SOURCE_DATE_EPOCH = "315532800"


def fixed_env(path: Sequence[PurePosixPath]) -> dict[str, str]:
    """The environment every build step starts from (the recipe adds to it, never removes)."""
    return {
        "PATH": ":".join([str(TOOLS_DIR), *map(str, path)]),
        "HOME": str(HOME_DIR),
        "TMPDIR": str(TMP_DIR),
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class Mount:
    """A host path made visible at ``target`` inside the sandbox."""

    host: Path
    target: PurePosixPath
    writable: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class SandboxSpec:
    """Everything that decides what a build step can see and do."""

    root: Path
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    cwd: PurePosixPath = BUILD_ROOT
    resolv_conf: Path | None = None  # the host's resolver config, for networked steps


def _bind(host: Path, target: str) -> list[str]:
    """Arguments showing ``host`` read-only at ``target``; a link stays a link."""
    if host.is_symlink():
        return ["--symlink", str(host.readlink()), target]
    return ["--ro-bind", str(host), target]


def _root_args(root: Path) -> list[str]:
    args = ["--tmpfs", "/"]
    for name in ROOT_ENTRIES:
        entry = root / name
        if name == "etc":
            continue  # curated by _etc_args
        if entry.is_symlink() or entry.is_dir():
            args += _bind(entry, f"/{name}")
    return args


def _etc_args(spec: SandboxSpec, identity: Identity) -> list[str]:
    """A curated ``/etc``: the allowed entries of the root's, and the sandbox user."""
    etc = spec.root / "etc"
    args = ["--tmpfs", "/etc", "--dir", "/etc/ssl"]
    names: list[str] = []
    if etc.is_dir() and not etc.is_symlink():  # a linked /etc could lead off the root
        names = [*ETC_ENTRIES, *(ETC_NETWORK_ENTRIES if spec.network else ()),
                 *sorted(p.name for pattern in ETC_PATTERNS for p in etc.glob(pattern))]
    for name in names:
        host = etc / name
        if not host.parent.is_symlink() and (host.is_symlink() or host.exists()):
            args += _bind(host, f"/etc/{name}")
    args += ["--perms", "0444", "--ro-bind-data", str(identity.passwd), "/etc/passwd",
             "--perms", "0444", "--ro-bind-data", str(identity.group), "/etc/group"]
    if spec.network and spec.resolv_conf is not None:
        args += ["--ro-bind", str(spec.resolv_conf), "/etc/resolv.conf"]
    return [*args, "--remount-ro", "/etc"]  # as read-only as the root's own /etc was


@dataclass(frozen=True, slots=True)
class Identity:
    """File descriptors bubblewrap reads the sandbox's ``passwd`` and ``group`` from."""

    passwd: int
    group: int


def _pipe_of(text: str) -> int:
    """A pipe's read end that yields ``text`` then EOF (it fits in the pipe's buffer)."""
    read, write = os.pipe()
    with os.fdopen(write, "w", encoding="utf-8") as sink:
        sink.write(text)
    return read


@contextlib.contextmanager
def identity_fds() -> Iterator[Identity]:
    """Pipes holding the sandbox's ``passwd`` and ``group`` (see bwrap_argv), closed after.

    Pipes, not files: nothing is left behind when venvseal is killed mid-step.
    """
    passwd = _pipe_of(PASSWD)
    try:
        group = _pipe_of(GROUP)
        try:
            yield Identity(passwd=passwd, group=group)
        finally:
            os.close(group)
    finally:
        os.close(passwd)


def bwrap_argv(bwrap: str, spec: SandboxSpec, argv: Sequence[str], *,
               identity: Identity) -> list[str]:
    """The full bubblewrap command line for running ``argv`` under ``spec`` (pure).

    ``identity`` names the descriptors holding the ``passwd`` and ``group`` to show
    (:func:`identity_fds`); the command must be run with them passed on.
    """
    args = [bwrap, *_root_args(spec.root), *_etc_args(spec, identity)]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for d in (BUILD_ROOT, HOME_DIR, TMP_DIR):
        args += ["--dir", str(d)]
    for m in spec.mounts:
        args += ["--bind" if m.writable else "--ro-bind", str(m.host), str(m.target)]
    # --unshare-user with --uid: never uid 0, and bwrap drops every capability;
    # --disable-userns: nor can the step make a user namespace of its own to regain them.
    args += ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
             "--gid", str(SANDBOX_UID), "--hostname", "venvseal", "--die-with-parent",
             "--new-session"]
    if spec.network:
        args.append("--share-net")
    args.append("--clearenv")
    for key, value in sorted(spec.env.items()):
        args += ["--setenv", key, value]
    args += ["--chdir", str(spec.cwd), "--", *argv]
    return args


# The Debian package that ships a program a build step runs, for the hint.
_PACKAGE_OF = {"strip": "binutils", "objcopy": "binutils", "cc": "gcc", "gcc": "gcc",
               "c++": "g++", "g++": "g++", "make": "make", "git": "git",
               "pkg-config": "pkgconf"}


class MissingProgramError(UsageError):
    """A build step's program is not in the toolchain (bubblewrap could not exec it): the
    recipe's toolchain lacks a package, so this is the recipe's to fix (exit 2)."""

    def __init__(self, what: str, program: str, path: str) -> None:
        package = _PACKAGE_OF.get(PurePosixPath(program).name)
        hint = (f"add {package!r} to [toolchain] debian packages (or install it in the "
                "toolchain root)" if package else "add the package that ships it to "
                "[toolchain] debian packages (or install it in the toolchain root), or set "
                "[toolchain] path")
        where = f"on its PATH ({path})" if "/" not in program else "at that path"
        super().__init__(f"{what}: the toolchain has no {program!r} {where}; {hint}")
        self.program = program


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Runs commands under a spec; ``bwrap`` is the located bubblewrap binary."""

    bwrap: str

    @classmethod
    def locate(cls) -> Sandbox:
        """Find bubblewrap on the host, or say how to install it."""
        return cls(process.find_tool("bwrap", "bubblewrap"))

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, what: str,
            check: bool = True, timeout: float | None = None,
            on_line: Callable[[str], None] | None = None) -> Completed:
        """Run ``argv`` inside the sandbox; CommandError with the output's tail on failure
        (CommandTimeoutError after ``timeout`` seconds: bwrap is killed, and with it, as
        the init of its pid namespace, every process of the sandbox)."""
        with identity_fds() as identity:
            try:
                return process.run(bwrap_argv(self.bwrap, spec, argv, identity=identity),
                                   what=what, check=check, pass_fds=astuple(identity),
                                   timeout=timeout, on_line=on_line)
            except CommandError as err:
                # The error names the command run in the sandbox, not bubblewrap's flags
                # (-v logs the whole line): what failed, then the tool's own last lines.
                err.argv = tuple(scrub(arg) for arg in argv)
                if f"bwrap: execvp {argv[0]}: No such file" in err.output_tail:
                    raise MissingProgramError(what, argv[0], spec.env.get("PATH", "")) from err
                raise

    def call(self, spec: SandboxSpec, argv: Sequence[str]) -> int:
        """Run ``argv`` in the sandbox attached to this terminal; its exit status."""
        import subprocess

        with identity_fds() as identity:
            command = bwrap_argv(self.bwrap, spec, argv, identity=identity)
            process.log.debug("$ %s", " ".join(command))
            return subprocess.run(command, check=False, pass_fds=astuple(identity)).returncode
