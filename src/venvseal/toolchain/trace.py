"""File-access tracing of the ``[verify]`` checks, so the runtime closure sees what they open.

What a program opens only at run time (a plugin it dlopens, a data file, its config) is
invisible to the dynamic loader's view of its ``DT_NEEDED`` libraries. The checks are run
once under strace (``-f -qq -z -e trace=openat,open,execve``: every process, successful
calls only; with ``--seccomp-bpf`` where it works, so no other call stops) *inside* the
sandbox, so the paths it logs are the sandbox's, i.e. the toolchain
root's and the store's. strace is the host's: it is copied with its own libraries and the
host's dynamic loader into a tools folder and started through that loader
(``ld.so --library-path``), so it runs whatever the toolchain root holds.

What the checks opened is kept in the closure itself, at :data:`RECORD` (a JSON object
``{"opened": {path: check}}``), so ``venvseal closure`` and ``venvseal image`` use it
without running the checks again.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from venvseal import process
from venvseal.toolchain.sandbox import BUILD_ROOT, TOOLS_DIR, Mount

RECORD = ".venvseal/opened.json"
TOOLS = TOOLS_DIR / "strace"
LOGS = BUILD_ROOT / "trace"
HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
STRACE_ARGS = ("-f", "-qq", "-z", "-e", "trace=openat,open,execve")
# Stop the checks only at the calls traced (a seccomp filter lets every other one through):
# django.setup() under strace took 1.46 s without it, 0.36 s with it (0.24 s untraced), for
# the same 1,037 lines (issue 16). Used when the host's strace and kernel allow it.
SECCOMP = ("--seccomp-bpf",)
# Paths a check may open that are never the toolchain's files.
NOT_TOOLCHAIN = tuple(PurePosixPath(p) for p in (
    "/venvseal", "/venvseal-build", "/proc", "/sys", "/dev", "/tmp", "/run"))
# "5 openat(AT_FDCWD, "/usr/lib/x.so", O_RDONLY|O_CLOEXEC) = 3", "execve("/bin/sh", [...".
_CALL = re.compile(r'^(?:\d+\s+)?(?:openat\(AT_FDCWD, |open\(|execve\()"((?:[^"\\]|\\.)*)"(.*)$')
_LIBRARY = re.compile(r"=> (/\S+) \(0x")


@dataclass(frozen=True, slots=True)
class Tracer:
    """Wraps check commands in strace; ``tools`` and ``logs`` are host folders."""

    tools: Path
    logs: Path
    args: tuple[str, ...] = STRACE_ARGS

    @classmethod
    def prepare(cls, scratch: Path) -> Tracer | None:
        """Copy the host's strace, its libraries and loader into ``scratch``; None if the
        host has no strace or it cannot trace here (the checks then run untraced)."""
        strace = shutil.which("strace")
        if strace is None:
            return None
        # Where ptrace is not allowed (a container's seccomp profile), strace cannot work:
        # the checks then run untraced, as without strace, rather than fail.
        def works(*args: str) -> bool:
            return process.run([strace, *args, "-f", "-qq", "-o", "/dev/null", "--",
                                "/bin/true"], what="strace (a trial run)",
                               check=False).returncode == 0

        args: tuple[str, ...]
        if works(*SECCOMP):
            args = (*STRACE_ARGS, *SECCOMP)
        elif works():
            args = STRACE_ARGS
        else:
            return None
        tools, logs = scratch / "strace-tools", scratch / "strace-logs"
        tools.mkdir(mode=0o755)
        logs.mkdir()
        logs.chmod(0o777)  # written by whichever uid the checks run as in the sandbox
        listed = process.run([HOST_LOADER, "--list", strace], what="libraries of strace")
        for library in [*_LIBRARY.findall(listed.output), HOST_LOADER, strace]:
            shutil.copy(library, tools / Path(library).name)
        return cls(tools, logs, args)

    @property
    def mounts(self) -> tuple[Mount, ...]:
        """What the checks' sandbox must add: the tools, and a writable log folder."""
        return (Mount(host=self.tools, target=TOOLS), Mount(host=self.logs, target=LOGS,
                                                            writable=True))

    def wrap(self, argv: Sequence[str], label: str, order: int) -> list[str]:
        """``argv`` run under strace, logging to a file named for ``order`` and ``label``."""
        log = LOGS / f"{order:05d}-{label}.log"
        return [str(TOOLS / Path(HOST_LOADER).name), "--library-path", str(TOOLS),
                str(TOOLS / "strace"), *self.args, "-o", str(log), "--", *argv]

    def opened(self) -> dict[str, str]:
        """Every toolchain path the checks opened or ran, with the first check that did."""
        found: dict[str, str] = {}
        for log in sorted(self.logs.glob("*.log")):
            label = log.stem.split("-", 1)[1]
            for path in parse_log(log.read_text(errors="replace")):
                found.setdefault(path, label)
        return dict(sorted(found.items()))


def parse_log(text: str) -> list[str]:
    """The absolute paths in an strace log's open and execve calls, folders left out."""
    paths: list[str] = []
    for line in text.splitlines():
        m = _CALL.match(line)
        if m is None or "\\" in m[1] or "O_DIRECTORY" in m[2] or not m[1].startswith("/"):
            continue
        path = PurePosixPath(m[1])
        if not any(path == p or path.is_relative_to(p) for p in NOT_TOOLCHAIN):
            paths.append(str(path))
    return list(dict.fromkeys(paths))


def write_record(closure: Path, opened: Mapping[str, str]) -> Path:
    """Keep what the checks opened in the closure (at :data:`RECORD`)."""
    file = closure / RECORD
    file.parent.mkdir(exist_ok=True)
    file.write_text(json.dumps({"opened": dict(sorted(opened.items()))}, indent=1,
                               sort_keys=True) + "\n")
    return file


def read_record(closure: Path) -> dict[str, str] | None:
    """What the checks opened, as the closure recorded it; None if they were not traced."""
    file = closure / RECORD
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    opened = data.get("opened") if isinstance(data, dict) else None
    if not isinstance(opened, dict):
        return None
    return {str(k): str(v) for k, v in opened.items()}
