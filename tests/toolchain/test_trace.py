"""The [verify] checks' file-access trace: strace logs parsed, and the real strace run in
the sandbox through its own loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import pytest

from venvseal.toolchain.sandbox import Sandbox, SandboxSpec
from venvseal.toolchain.trace import (
    RECORD,
    SECCOMP,
    STRACE_ARGS,
    Tracer,
    parse_log,
    read_record,
    write_record,
)

LOG = """\
5     execve("/usr/bin/python3", ["/usr/bin/python3", "-c", "..."], 0x7ffd /* 2 vars */) = 0
5     openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3
5     openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libm.so.6", O_RDONLY|O_CLOEXEC) = 3
5     openat(AT_FDCWD, "/usr/lib/python3/dist-packages", O_RDONLY|O_NONBLOCK|O_DIRECTORY) = 3
5     openat(AT_FDCWD, "/venvseal/store/abc-x/lib/python3.11/site.py", O_RDONLY) = 3
5     openat(AT_FDCWD, "/venvseal-build/tmp/x", O_RDONLY) = 3
5     openat(AT_FDCWD, "/proc/self/maps", O_RDONLY) = 3
5     openat(AT_FDCWD, "relative.txt", O_RDONLY) = 3
5     openat(3, "plugin.so", O_RDONLY) = 4
6     open("/usr/lib/x86_64-linux-gnu/sasl2/libplain.so", O_RDONLY <unfinished ...>
5     openat(AT_FDCWD, "/usr/lib/x86_64-linux-gnu/gconv/CP1252.so", O_RDONLY|O_CLOEXEC) = 5
5     openat(AT_FDCWD, "/etc/odd\\nname", O_RDONLY) = 3
5     openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libm.so.6", O_RDONLY|O_CLOEXEC) = 3
5     +++ exited with 0 +++
"""


def test_a_log_gives_the_toolchain_files_in_order() -> None:
    assert parse_log(LOG) == [
        "/usr/bin/python3", "/etc/ld.so.cache", "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/sasl2/libplain.so",
        "/usr/lib/x86_64-linux-gnu/gconv/CP1252.so"]


def test_the_record_round_trips(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None
    write_record(tmp_path, {"/b": "verify.commands[0]", "/a": "verify.imports"})
    assert read_record(tmp_path) == {"/a": "verify.imports", "/b": "verify.commands[0]"}
    assert list(read_record(tmp_path) or {}) == ["/a", "/b"]
    (tmp_path / RECORD).write_text('{"opened": 3}')
    assert read_record(tmp_path) is None


def test_strace_runs_in_the_sandbox_and_sees_dlopen(tmp_path: Path) -> None:
    tracer = Tracer.prepare(tmp_path)
    assert tracer is not None, "strace is missing (Debian package strace): run scripts/setup"
    spec = SandboxSpec(root=Path("/"), mounts=tracer.mounts, env={"PATH": "/usr/bin:/bin"})
    code = ("import ctypes; ctypes.CDLL('libsasl2.so.2'); "
            "open('/usr/share/zoneinfo/UTC', 'rb').close(); '\\xe9'.encode('cp037')")
    argv = ["/usr/bin/python3", "-I", "-c", code]
    Sandbox.locate().run(spec, tracer.wrap(argv, "verify.commands[0]", 1000), what="traced")
    Sandbox.locate().run(spec, tracer.wrap(["/bin/true"], "verify.imports", 0), what="traced")
    opened = tracer.opened()
    assert opened["/usr/bin/python3"] == "verify.commands[0]"
    assert opened["/bin/true"] == "verify.imports"
    libsasl = [p for p in opened if PurePosixPath(p).name.startswith("libsasl2.so")]
    assert libsasl and opened["/usr/share/zoneinfo/UTC"] == "verify.commands[0]"
    assert not [p for p in opened if p.startswith(("/proc", "/venvseal-build", "/tmp"))]


@pytest.mark.parametrize("failing", [True, False])
def test_a_traced_command_keeps_its_exit_status(tmp_path: Path, failing: bool) -> None:
    tracer = Tracer.prepare(tmp_path)
    assert tracer is not None
    spec = SandboxSpec(root=Path("/"), mounts=tracer.mounts)
    done = Sandbox.locate().run(spec, tracer.wrap(["/bin/false" if failing else "/bin/true"],
                                                  "verify.commands[0]", 1000),
                                what="traced", check=False)
    assert (done.returncode != 0) is failing


def test_the_seccomp_filter_is_used_and_sees_what_full_tracing_sees(tmp_path: Path) -> None:
    """With --seccomp-bpf only the traced calls stop (django.setup() 1.46 s -> 0.36 s); the
    paths logged must be the same as when every call stops."""
    code = ("import ctypes, json, email.parser; ctypes.CDLL('libsasl2.so.2'); "
            "open('/usr/share/zoneinfo/UTC', 'rb').close(); "
            "import subprocess; subprocess.run(['/bin/true'])")
    seen = []
    for name, args in (("filtered", None), ("full", STRACE_ARGS)):
        (tmp_path / name).mkdir()
        tracer = Tracer.prepare(tmp_path / name)
        assert tracer is not None
        if args is None:
            assert tracer.args == (*STRACE_ARGS, *SECCOMP), "this kernel refuses the filter"
        else:
            tracer = dataclasses.replace(tracer, args=args)
        spec = SandboxSpec(root=Path("/"), mounts=tracer.mounts, env={"PATH": "/usr/bin:/bin"})
        Sandbox.locate().run(spec, tracer.wrap(["/usr/bin/python3", "-I", "-c", code],
                                               "verify.commands[0]", 0), what="traced")
        seen.append(tracer.opened())
    assert seen[0] == seen[1]
    assert "/bin/true" in seen[0] and "/usr/share/zoneinfo/UTC" in seen[0]
