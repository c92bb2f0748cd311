"""The build sandbox: bubblewrap with a fixed file system layout and a cleared environment.

Every build step sees the same paths whatever the host: the toolchain's root file system
read-only as ``/``, and everything build-time under :data:`BUILD_ROOT`. Network exists only
when the spec asks for it (the fixed-output stages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from venvseal import process
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


def _root_args(root: Path) -> list[str]:
    args = ["--tmpfs", "/"]
    for name in ROOT_ENTRIES:
        entry = root / name
        if entry.is_symlink():
            args += ["--symlink", str(entry.readlink()), f"/{name}"]
        elif entry.is_dir():
            args += ["--ro-bind", str(entry), f"/{name}"]
    return args


def bwrap_argv(bwrap: str, spec: SandboxSpec, argv: Sequence[str]) -> list[str]:
    """The full bubblewrap command line for running ``argv`` under ``spec`` (pure)."""
    args = [bwrap, *_root_args(spec.root)]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for d in (BUILD_ROOT, HOME_DIR, TMP_DIR):
        args += ["--dir", str(d)]
    for m in spec.mounts:
        args += ["--bind" if m.writable else "--ro-bind", str(m.host), str(m.target)]
    args += ["--unshare-all", "--hostname", "venvseal", "--die-with-parent", "--new-session"]
    if spec.network:
        args.append("--share-net")
        if spec.resolv_conf is not None and (spec.root / "etc").is_dir():
            args += ["--ro-bind", str(spec.resolv_conf), "/etc/resolv.conf"]
    args.append("--clearenv")
    for key, value in sorted(spec.env.items()):
        args += ["--setenv", key, value]
    args += ["--chdir", str(spec.cwd), "--", *argv]
    return args


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Runs commands under a spec; ``bwrap`` is the located bubblewrap binary."""

    bwrap: str

    @classmethod
    def locate(cls) -> Sandbox:
        """Find bubblewrap on the host, or say how to install it."""
        return cls(process.find_tool("bwrap", "bubblewrap"))

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, what: str,
            check: bool = True, timeout: float | None = None) -> Completed:
        """Run ``argv`` inside the sandbox; CommandError with the output's tail on failure
        (CommandTimeoutError after ``timeout`` seconds: bwrap is killed, and with it, as
        the init of its pid namespace, every process of the sandbox)."""
        return process.run(bwrap_argv(self.bwrap, spec, argv), what=what, check=check,
                           timeout=timeout)

    def call(self, spec: SandboxSpec, argv: Sequence[str]) -> int:
        """Run ``argv`` in the sandbox attached to this terminal; its exit status."""
        import subprocess

        command = bwrap_argv(self.bwrap, spec, argv)
        process.log.debug("$ %s", " ".join(command))
        return subprocess.run(command, check=False).returncode
