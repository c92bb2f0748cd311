"""Hostile input, a full disk and secrets, through the real CLI (slow).

One small app (``test_deps.make_app``: six, idna, a workspace member, plus a copy rule and
``[verify]``) is built once into a module store. Each row of :data:`HOSTILE` copies the
project into its own tmp_path, breaks one thing on purpose, runs venvseal against that store
and checks:

- the exit code (1: a build, fetch or tool failed; 2: bad usage or recipe);
- exactly the error lines expected, in order, each naming what and where and the next step;
- no traceback and no 'internal error';
- the store unchanged: the NAR hash of every entry of the store root (``.locks`` aside), so
  no path, meta, output record or debris in ``.tmp`` appeared, and no content changed.

Not repeated here (see those tables): ``test_cli.BAD_INPUT`` (malformed TOML, unknown key,
wrong type, missing key, recipe not found, store a file or under a file, hash of a missing
path, verify of a path outside the store, unknown option), ``test_assemble.BAD_INPUT`` (copy
from '..', from an absolute path, through a symlink out of the project, a folder holding a
symlink out, substitutions that do not apply, verify failures) and ``test_deps.BAD_INPUT``
(missing and stale uv.lock, python too old, compile errors, no network).

Then: a non-ELF ``libfoo.so`` is just a file; a store on an 8 MiB tmpfs fills up mid-build;
host variables and an index token never reach the store, the logs or ``--json``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from support import (
    ERROR_PREFIX,
    PYTHON,
    Run,
    free_port,
    uv_lock,
    venvseal,
    venvseal_process,
    write,
)
from support.apps import add_assembly, make_app

from venvseal.elf.tool import locate_patchelf
from venvseal.store.nar import nar_hash

pytestmark = pytest.mark.slow

LIBZ = next((p for p in ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1")
             if os.path.exists(p)), "/usr/lib/x86_64-linux-gnu/libz.so.1")
EM_AARCH64 = 183  # ELF e_machine
BAD_REV = "deadbeef" * 5
OTHER_HASH = "sha256-" + base64.b64encode(hashlib.sha256(b"something else").digest()).decode()


# A local HTTP server for [[fetch]] url rows ---------------------------------------------------


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SOURCE = tar_gz({"lib-1.0/lib.py": b"X = 1\n"})
FILES = {
    "/src.tar.gz": SOURCE,
    "/short.tar.gz": SOURCE,  # sent with a Content-Length 1000 bytes larger than the body
    "/unsafe.tar.gz": tar_gz({"lib-1.0/lib.py": b"X = 1\n", "../evil.py": b"boom\n"}),
}


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves FILES; '/short/...' hangs up before the body is complete."""

    def do_GET(self) -> None:
        data = FILES.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        extra = 1000 if self.path.startswith("/short") else 0
        self.send_header("Content-Length", str(len(data) + extra))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on 127.0.0.1 in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# The built app -------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True)


@dataclass(frozen=True)
class Base:
    """The built app and what the rows borrow: another project's lock, a repo, a server."""

    project: Path
    store: Path
    cache: Path
    deps: Path  # the deps store path
    other_lock: str  # uv.lock of another project
    repo: Path  # a git repository with one commit
    url: str  # the file server's base URL


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    root = tmp_path_factory.mktemp("hostile")
    cache = root / "uv-cache"
    project = add_assembly(make_app(root / "app", cache))
    store = root / "store"
    built = venvseal("--json", "--store", store, "build", "--update-hash", "--uv-cache", cache,
                     project)
    assert built.code == 0, built.err
    other = make_app(root / "other", cache, name="other", dependencies=("six==1.16.0",),
                     member=False)
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo / "lib.py", "X = 1\n")
    git(repo, "add", "lib.py")
    git(repo, "commit", "-q", "-m", "one")
    with serving(FileHandler) as url:
        yield Base(project=project, store=store, cache=cache,
                   deps=Path(built.json()["deps"]), other_lock=(other / "uv.lock").read_text(),
                   repo=repo, url=url)


def store_snapshot(root: Path) -> dict[str, str]:
    """The NAR hash of each entry of the store root but .locks (paths, .meta, .tmp, ...)."""
    return {e.name: nar_hash(e).hash.sri for e in sorted(root.iterdir()) if e.name != ".locks"}


# Rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What a row's change works on: its copy of the project, its tmp_path, the base."""

    project: Path
    tmp: Path
    base: Base

    def values(self) -> dict[str, str]:
        return {"project": str(self.project), "recipe": str(self.project / "venvseal.toml"),
                "tmp": str(self.tmp), "store": str(self.base.store),
                "cache": str(self.base.cache), "deps": str(self.base.deps),
                "repo": str(self.base.repo), "url": self.base.url}


Change = Callable[[Ctx], object]
BUILD = ("--store", "{store}", "build", "--uv-cache", "{cache}", "{project}")


@dataclass(frozen=True)
class Case:
    """One row: how to break things, how to run venvseal, the exit code, the error lines.

    ``lines`` has one tuple of fragments per expected error line, in order (formatted with
    :meth:`Ctx.values`). ``runner``: "in" (this process), "process" (a child, with a
    timeout: for input that could block a read) or "read-only store" (a child in a mount
    namespace where the store is bind-mounted read-only).
    """

    id: str
    change: Change
    code: int
    lines: tuple[tuple[str, ...], ...]
    argv: tuple[str, ...] = BUILD
    runner: str = "in"


def nothing(ctx: Ctx) -> None:
    pass


def both(*changes: Change) -> Change:
    def change(ctx: Ctx) -> None:
        for one in changes:
            one(ctx)
    return change


def put(rel: str, data: bytes | str) -> Change:
    def change(ctx: Ctx) -> None:
        path = ctx.project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return change


def edit(rel: str, old: str, new: str) -> Change:
    def change(ctx: Ctx) -> None:
        text = (ctx.project / rel).read_text()
        assert old in text, f"{old!r} not in {rel}"
        (ctx.project / rel).write_text(text.replace(old, new, 1))
    return change


def recipe(old: str, new: str) -> Change:
    return edit("venvseal.toml", old, new)


def add_to_recipe(text: str) -> Change:
    def change(ctx: Ctx) -> None:
        with (ctx.project / "venvseal.toml").open("a") as f:
            f.write(text.format(**ctx.values()))
    return change


def append(rel: str, data: str) -> Change:
    def change(ctx: Ctx) -> None:
        with (ctx.project / rel).open("a") as f:
            f.write(data)
    return change


def symlink(rel: str, target: str) -> Change:
    def change(ctx: Ctx) -> None:
        (ctx.project / rel).symlink_to(target)
    return change


def fifo(rel: str) -> Change:
    def change(ctx: Ctx) -> None:
        path = ctx.project / rel
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    return change


def unix_socket(rel: str) -> Change:
    def change(ctx: Ctx) -> None:
        path = ctx.project / rel
        with contextlib.chdir(path.parent), socket.socket(socket.AF_UNIX) as s:
            s.bind(path.name)  # relative: a full tmp_path may be longer than sun_path allows
    return change


def in_tmp(make: Callable[[Path], object]) -> Change:
    return lambda ctx: make(ctx.tmp)


def other_arch_elf(ctx: Ctx) -> None:
    """A real shared library that needs libz.so.1, relabelled as an aarch64 file."""
    so = ctx.project / "src/demo/libfoo.so"
    shutil.copyfile(LIBZ, so)
    subprocess.run([locate_patchelf(), "--add-needed", "libz.so.1", str(so)], check=True)
    data = bytearray(so.read_bytes())
    data[18:20] = EM_AARCH64.to_bytes(2, "little")  # e_machine, in a little-endian ELF64
    so.write_bytes(bytes(data))


def other_project_lock(ctx: Ctx) -> None:
    (ctx.project / "uv.lock").write_text(ctx.base.other_lock)


def member_outside(ctx: Ctx) -> None:
    write(ctx.tmp / "evil" / "pyproject.toml", '[project]\nname = "member"\nversion = "0.2.0"\n')
    edit("uv.lock", 'source = { editable = "packages/member" }\ndependencies',
         'source = { editable = "../../evil" }\ndependencies')(ctx)


def patch_outside_closure(ctx: Ctx) -> None:
    write(ctx.project / "fix.diff", "--- a/../../../etc/hostname\n+++ b/../../../etc/hostname\n"
                                    "@@ -1 +1 @@\n-old\n+new\n")
    add_to_recipe('\n[[substitute]]\npatch = "fix.diff"\n')(ctx)


def patch_through_symlink(ctx: Ctx) -> None:
    write(ctx.tmp / "outside.diff", "--- a/x\n+++ b/x\n")
    (ctx.project / "fix.diff").symlink_to(ctx.tmp / "outside.diff")
    add_to_recipe('\n[[substitute]]\npatch = "fix.diff"\n')(ctx)


def fetch(source: str, hash_line: str = "") -> Change:
    return add_to_recipe(f'\n[[fetch]]\nname = "lib"\n{source}\n{hash_line}\n')


def repo_with_link(name: str, target: str) -> Callable[[Path], object]:
    """A git repository at ``<tmp>/evil`` whose one commit holds the link ``name``."""
    def make(tmp: Path) -> None:
        repo = tmp / "evil"
        repo.mkdir()
        git(repo, "init", "-q")
        write(repo / "lib.py", "X = 1\n")
        (repo / name).symlink_to(target)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "one")
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
        (tmp / "rev").write_text(rev)
    return make


def fetch_evil(ctx: Ctx) -> None:
    rev = (ctx.tmp / "rev").read_text()
    fetch(f'git = "{ctx.tmp}/evil"\nrev = "{rev}"')(ctx)


def debian_unknown_package(ctx: Ctx) -> None:
    assert shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed: run scripts/setup"
    recipe('root = "/"', f'debian = {{ suite = "{host_suite()}", '
                         'packages = ["venvseal-no-such-package"] }')(ctx)


def host_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME=") and line.split("=", 1)[1]:
            return line.split("=", 1)[1].strip('"')
    pytest.skip("the host's /etc/os-release names no Debian suite")


NESTED = "a = " + "[" * 10_000 + "]" * 10_000 + "\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 16
TWO_MIB = "# padding\n" * (1 << 18)
TOML_ONLY = "a recipe or pyproject.toml"
REBUILD_LOCK = "recreate it with 'uv lock'"
MISSING = "install each library in the toolchain"
FETCH = "{recipe}: fetch[0] (lib)"
SITE = "lib/python3.11/site-packages"

HOSTILE: list[Case] = [
    # The recipe file itself.
    Case("recipe nested 10,000 levels", put("venvseal.toml", NESTED), 2,
         (("{recipe}: invalid TOML: arrays or tables nested too deeply", "right file"),)),
    Case("recipe of 2 MiB", append("venvseal.toml", TWO_MIB), 2,
         (("{recipe}: larger than 1 MiB", "check that this is the right file"),)),
    Case("recipe with a NUL byte", put("venvseal.toml", '[app]\nname = "de\0mo"\n'), 2,
         (("{recipe}: invalid TOML at line 2, column 11: illegal character '\\x00'",),)),
    Case("recipe that is binary", put("venvseal.toml", PNG), 2,
         (("{recipe}: not UTF-8 text (byte 0x89 at offset 0); save as UTF-8",),)),
    Case("recipe with a duplicate key", recipe('version = "1.0.0"\n',
                                               'version = "1.0.0"\nversion = "2.0.0"\n'), 2,
         (("{recipe}: invalid TOML at line 5", "cannot overwrite a value"),)),
    Case("recipe with invalid UTF-8 in a string",
         put("venvseal.toml", b'[app]\nname = "d\xffmo"\nversion = "1"\n'), 2,
         (("{recipe}: not UTF-8 text (byte 0xff at offset 15); save as UTF-8",),)),
    Case("recipe that is a fifo", fifo("venvseal.toml"), 2,
         (("{recipe}: cannot read: not a regular file", "replace it with a TOML file"),),
         argv=("--store", "{store}", "build", "--uv-cache", "{cache}", "{recipe}"),
         runner="process"),
    # pyproject.toml and uv.lock.
    Case("pyproject.toml that is binary", put("pyproject.toml", PNG), 2,
         (("{project}/pyproject.toml: not UTF-8 text (byte 0x89 at offset 0); save as UTF-8",),)),
    Case("pyproject.toml of 2 MiB", append("pyproject.toml", TWO_MIB), 2,
         (("{project}/pyproject.toml: larger than 1 MiB", "right file"),)),
    Case("pyproject.toml nested 10,000 levels", put("pyproject.toml", NESTED), 2,
         (("{project}/pyproject.toml: invalid TOML: arrays or tables nested too deeply",),)),
    Case("uv.lock that is JSON", put("uv.lock", '{"version": 1, "package": []}\n'), 2,
         (("{project}/uv.lock: not a valid uv.lock (Invalid statement (at line 1, column 1))",
           REBUILD_LOCK),)),
    Case("uv.lock of another tool", put("uv.lock", '[metadata]\nlock-version = "2.0"\n'), 2,
         (("{project}/uv.lock: not a uv lock file (it has no integer 'version' at the top)",
           REBUILD_LOCK),)),
    Case("uv.lock that is binary", put("uv.lock", PNG), 2,
         (("{project}/uv.lock: not a valid uv.lock ('utf-8' codec can't decode byte 0x89",
           REBUILD_LOCK),)),
    Case("uv.lock nested 10,000 levels", put("uv.lock", NESTED), 2,
         (("{project}/uv.lock: not a valid uv.lock (nested too deeply to read)",
           REBUILD_LOCK),)),
    Case("uv.lock of 4 MiB ending in junk", append("uv.lock", "junk\n" * (1 << 20)), 2,
         (("{project}/uv.lock: not a valid uv.lock (Expected '=' after a key", REBUILD_LOCK),)),
    Case("uv.lock of another project", other_project_lock, 1,
         (("{project}/uv.lock is out of date with pyproject.toml; run 'uv lock'",),)),
    Case("uv.lock that is a fifo", fifo("uv.lock"), 2,
         (("{project}/uv.lock: cannot read it (not a regular file)", "'uv lock'"),),
         runner="process"),
    Case("workspace member in uv.lock outside the project", member_outside, 2,
         (("{project}/uv.lock: package member comes from ../../evil, outside the project",
           "move it inside the project folder"),)),
    # Every recipe key that takes a path.
    Case("app.project missing", recipe("[app]\n", '[app]\nproject = "../nowhere"\n'), 2,
         (("{tmp}/nowhere does not exist or is not a folder", "fix [app] project"),)),
    Case("app.project a symlink loop",
         both(symlink("loop", "loop"), recipe("[app]\n", '[app]\nproject = "loop"\n')), 2,
         (("{project}/loop does not exist or is not a folder", "fix [app] project"),)),
    Case("toolchain.root missing", recipe('root = "/"', 'root = "rootfs"'), 2,
         (("toolchain root {project}/rootfs is not a directory; fix [toolchain] root",),)),
    Case("toolchain.root a file",
         both(put("rootfs", "not a folder\n"), recipe('root = "/"', 'root = "rootfs"')), 2,
         (("toolchain root {project}/rootfs is not a directory; fix [toolchain] root",),)),
    Case("toolchain.root a symlink loop",
         both(symlink("rootfs", "rootfs"), recipe('root = "/"', 'root = "rootfs"')), 2,
         (("toolchain root {project}/rootfs is not a directory; fix [toolchain] root",),)),
    Case("toolchain.python missing", recipe(PYTHON, "/usr/bin/python0.1"), 2,
         (("toolchain python /usr/bin/python0.1 not found in root /",
           "fix [toolchain] python or install the interpreter there"),)),
    Case("toolchain.python with '..'", recipe(PYTHON, "/usr/bin/../../etc/passwd"), 2,
         (("{recipe}: toolchain.python: '/usr/bin/../../etc/passwd' must not contain '..'",),)),
    Case("assemble.copy.to with '..'",
         recipe('to = "@site-packages@/demo"', 'to = "@site-packages@/../../../../etc"'), 2,
         (("{recipe}: assemble.copy[0].to: '../../../../etc' must not contain '..'",),)),
    Case("assemble.copy.to absolute", recipe('to = "@site-packages@/demo"', 'to = "/etc/demo"'),
         2, (("{recipe}: assemble.copy[0].to: '/etc/demo' must be a relative path",),)),
    Case("assemble.copy.from starting with @site-packages@",
         recipe('from = "src/demo"', 'from = "@site-packages@/demo"'), 2,
         (("{recipe}: assemble.copy[0].from: @site-packages@ cannot start this path; allowed: "
           "none (no [[fetch]] declared)",),)),
    Case("substitute.file with '..'",
         add_to_recipe('\n[[substitute]]\nfile = "../../etc/passwd"\nreplace = "a"\nwith = "b"\n'),
         2, (("{recipe}: substitute[0].file: '../../etc/passwd' must not contain '..'",),)),
    Case("substitute.patch with '..'", add_to_recipe('\n[[substitute]]\npatch = "../x.diff"\n'),
         2, (("{recipe}: substitute[0].patch: '../x.diff' must not contain '..'",),)),
    Case("substitute.patch absolute", add_to_recipe('\n[[substitute]]\npatch = "/etc/passwd"\n'),
         2, (("{recipe}: substitute[0].patch: '/etc/passwd' must be a relative path",),)),
    Case("substitute.patch a symlink out of the project", patch_through_symlink, 1,
         (("substitute[0].patch: ../outside.diff leads outside {project}",),)),
    Case("patch that touches a file outside the closure", patch_outside_closure, 1,
         (("substitute[0].patch: fix.diff touches ../../../etc/hostname, outside the closure",
           "fix the patch or its strip level"),)),
    Case("assemble.links name with '..'",
         recipe("[verify]", '[assemble]\nlinks = { "../up" = "lib" }\n\n[verify]'), 2,
         (("{recipe}: assemble.links.\"../up\": link name '../up' must be a single file name",),)),
    Case("assemble.links target with '..'",
         recipe("[verify]", '[assemble]\nlinks = { up = "../../../etc/passwd" }\n\n[verify]'), 2,
         (("{recipe}: assemble.links.up: '../../../etc/passwd' must not contain '..'",),)),
    Case("assemble.links target absolute",
         recipe("[verify]", '[assemble]\nlinks = { up = "/etc/passwd" }\n\n[verify]'), 2,
         (("{recipe}: assemble.links.up: '/etc/passwd' must be a relative path",),)),
    # Project files a copy rule reads.
    Case("copied folder with a symlink loop",
         both(symlink("src/demo/a", "b"), symlink("src/demo/b", "a")), 1,
         (("{project}/src/demo/a: symlink to b leads nowhere", "fix it, drop it or exclude it"),)),
    Case("copy rule naming a symlink loop",
         both(symlink("loop", "loop"), recipe('from = "src/demo"', 'from = "loop"')), 1,
         (("{project}/loop: symlink to loop leads nowhere", "fix it, drop it or exclude it"),)),
    Case("copy rule naming a dangling symlink",
         both(symlink("current", "releases/v2"), recipe('from = "src/demo"', 'from = "current"')),
         1, (("{project}/current: symlink to releases/v2 leads nowhere",),)),
    Case("copied folder holding a fifo", fifo("src/demo/pipe"), 1,
         (("{project}/src/demo/pipe: not a file, directory or symlink; remove or exclude it",),)),
    Case("copied folder holding a socket", unix_socket("src/demo/sock"), 1,
         (("{project}/src/demo/sock: not a file, directory or symlink; remove or exclude it",),)),
    Case("copied ELF file for another architecture", other_arch_elf, 1,
         (("1 needed shared libraries cannot be found",),
          (f"{SITE}/demo/libfoo.so -> libz.so.1 (only found for another architecture: ",
           "(EM_X86_64, 64-bit)"),
          (MISSING, "[assemble] ignore-missing"))),
    Case("copied ELF file that is only a magic number", put("src/demo/libfoo.so", b"\x7fELF"), 1,
         ((f"{SITE}/demo/libfoo.so: not a valid ELF file", "rebuild or exclude it"),)),
    # [[fetch]]
    Case("git fetch of a commit the repository lacks",
         fetch(f'git = "{{repo}}"\nrev = "{BAD_REV}"'), 1,
         ((f"{FETCH}: commit {BAD_REV} is not in {{repo}}", "check fetch[0].rev"),)),
    Case("git fetch of a folder that is no repository",
         both(in_tmp(lambda tmp: (tmp / "plain").mkdir()),
              fetch(f'git = "{{tmp}}/plain"\nrev = "{BAD_REV}"')), 1,
         ((f"{FETCH}: git cannot fetch {{tmp}}/plain", "check the git URL"),)),
    Case("git fetch of a tree with a link to /etc/shadow",
         both(in_tmp(repo_with_link("leak", "/etc/shadow")), fetch_evil), 1,
         ((f"{FETCH}: the checkout of {{tmp}}/evil at ",
           "is unsafe: member 'leak' is a symlink to the absolute path '/etc/shadow'",
           "make the link relative and inside the repository"),)),
    Case("git fetch of a tree with a link climbing out of it",
         both(in_tmp(repo_with_link("keys", "../../x")), fetch_evil), 1,
         ((f"{FETCH}: the checkout of {{tmp}}/evil at ",
           "is unsafe: member 'keys' is a symlink to '../../x', which leads outside the tree",
           "make the link relative and inside the repository"),)),
    Case("url fetch whose content differs from its hash",
         fetch('url = "{url}/src.tar.gz"', f'hash = "{OTHER_HASH}"'), 1,
         (("hash mismatch in fixed-output path '{store}/", "-lib-src'"),
          (f"specified: {OTHER_HASH}",), ("got:       sha256-",),
          ("if the new content is expected, declare sha256-",))),
    Case("url fetch interrupted", fetch('url = "{url}/short.tar.gz"'), 1,
         ((f"{FETCH}: the download of {{url}}/short.tar.gz was interrupted",
           "retry; if it keeps failing, check the network"),)),
    Case("url fetch answered 404", fetch('url = "{url}/missing.tar.gz"'), 1,
         ((f"{FETCH}: {{url}}/missing.tar.gz answered HTTP 404", "check the URL"),)),
    Case("url fetch of an archive with '..'", fetch('url = "{url}/unsafe.tar.gz"'), 1,
         ((f"{FETCH}: the archive from {{url}}/unsafe.tar.gz is unsafe: member '../evil.py'",
           "venvseal does not unpack it"),)),
    # The toolchain: mmdebstrap stops within seconds on an unknown package.
    Case("unknown Debian package", debian_unknown_package, 1,
         (("failed: E: Unable to locate package venvseal-no-such-package",
           "check [toolchain] debian.packages names"),)),
    # The command line.
    Case("unknown subcommand", nothing, 2,
         (("argument COMMAND: invalid choice: 'frobnicate'", "see 'venvseal --help'"),),
         argv=("--store", "{store}", "frobnicate", "{project}")),
    Case("push with both a recipe and --archive", nothing, 2,
         (("venvseal push: give a RECIPE or --archive FILE, not both",),),
         argv=("--store", "{store}", "push", "--archive", "{tmp}/app.tar", "{project}",
               "127.0.0.1:5000/demo:1")),
    Case("--store on a read-only file system", nothing, 2,
         (("store at {store} is not writable (Read-only file system",
           "pass --store DIR or set VENVSEAL_STORE"),), runner="read-only store"),
    Case("--uv-cache under a regular file",
         both(in_tmp(lambda tmp: write(tmp / "file", "x")),
              # a change uv reads (a comment is not one), so the deps stage runs
              append("pyproject.toml", '\n[project.urls]\nHomepage = "https://x.invalid"\n')),
         2,
         (("the uv cache {tmp}/file/cache cannot be created (Not a directory)",
           "pass --uv-cache DIR"),),
         argv=("--store", "{store}", "build", "--uv-cache", "{tmp}/file/cache", "{project}")),
    Case("hash of a fifo", in_tmp(lambda tmp: os.mkfifo(tmp / "pipe")), 1,
         (("{tmp}/pipe: is a named pipe (fifo), which a NAR cannot hold",
           "remove it from the tree or exclude it"),),
         argv=("hash", "{tmp}/pipe")),
    Case("verify of a file inside a store path", nothing, 2,
         (("{deps}/pyvenv.cfg is not a path in the store at {store}",
           "pass {store}/<hash>-<name>"),),
         argv=("--store", "{store}", "verify", "{deps}/pyvenv.cfg")),
    Case("verify of the store's own .meta", nothing, 2,
         (("{store}/.meta is not a path in the store at {store}",),),
         argv=("--store", "{store}", "verify", "{store}/.meta")),
    Case("run without a command", nothing, 2,
         (("venvseal run: give the command after '--'",),),
         argv=("--store", "{store}", "run", "{project}")),
    Case("push to a reference without a host", nothing, 2,
         (("'HTTP://bad host/Repo:1': 'HTTP:' is not a host[:port]",
           "e.g. 127.0.0.1:5000/demo:1.0"),),
         argv=("--store", "{store}", "push", "{project}", "HTTP://bad host/Repo:1")),
    Case("push to an upper-case repository", nothing, 2,
         (("repository 'Demo' must be lower-case letters and digits",),),
         argv=("--store", "{store}", "push", "{project}", "127.0.0.1:5000/Demo:1")),
    Case("image into a missing folder", nothing, 2,
         (("{tmp}/missing is not a folder; create it or choose another -o FILE",),),
         argv=("--store", "{store}", "image", "-o", "{tmp}/missing/app.tar", "{project}")),
    Case("--out-link into a missing folder", nothing, 1,
         (("cannot create out-link {tmp}/missing/result (No such file or directory)",
           "choose a folder you can write"),),
         argv=("--store", "{store}", "build", "--uv-cache", "{cache}", "--out-link",
               "{tmp}/missing/result", "{project}")),
]


def in_read_only_store(store: Path, argv: list[str]) -> Run:
    """venvseal in a mount namespace where ``store`` is bind-mounted read-only."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace (unshare -m): {probe.stderr!r}")
    where = shlex.quote(str(store))
    setup = f"mount --bind {where} {where}; mount -o remount,bind,ro {where}"
    done = subprocess.run(["unshare", "-m", "sh", "-ec", f'{setup}\nexec "$@"', "sh",
                           sys.executable, "-m", "venvseal", *argv],
                          capture_output=True, text=True, check=False, timeout=120,
                          stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)


def error_lines(run: Run) -> list[str]:
    return [line.removeprefix(ERROR_PREFIX) for line in run.err.splitlines()
            if line.startswith(ERROR_PREFIX)]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_input_gives_clear_errors_and_leaves_the_store_alone(
        base: Base, tmp_path: Path, case: Case) -> None:
    ctx = Ctx(project=tmp_path / "app", tmp=tmp_path, base=base)
    shutil.copytree(base.project, ctx.project, symlinks=True)
    case.change(ctx)
    values = ctx.values()
    argv = [a.format(**values) for a in case.argv]
    before = store_snapshot(base.store)
    if case.runner == "read-only store":
        run = in_read_only_store(base.store, argv)
    elif case.runner == "process":
        run = venvseal_process(*argv, timeout=120)
    else:
        run = venvseal(*argv)
    assert run.code == case.code, run.err
    got = error_lines(run)
    assert len(got) == len(case.lines), f"{case.id}: expected {len(case.lines)} error " \
                                        f"line(s), got:\n{run.err}"
    for line, fragments in zip(got, case.lines, strict=True):
        for fragment in fragments:
            assert fragment.format(**values) in line, f"{case.id}: {fragment!r} not in {line!r}"
    assert "Traceback" not in run.err
    assert "internal error" not in run.err
    assert store_snapshot(base.store) == before


def test_hostile_table_has_at_least_30_distinct_rows() -> None:
    assert len(HOSTILE) >= 30
    assert len({c.id for c in HOSTILE}) == len(HOSTILE)


def test_a_non_elf_file_named_like_a_library_is_just_copied(base: Base, tmp_path: Path) -> None:
    project = tmp_path / "app"
    shutil.copytree(base.project, project, symlinks=True)
    text = b"INPUT(-lfoo_real)\n"  # a linker script, as /usr/lib/*/libc.so is
    (project / "src/demo/libfoo.so").write_bytes(text)
    run = venvseal("--json", "--store", base.store, "build", "--uv-cache", base.cache, project)
    assert run.code == 0, run.err
    closure = Path(run.json()["path"])
    assert (closure / SITE / "demo/libfoo.so").read_bytes() == text
    assert run.json()["verified"]["elf_files"] == 0


# A full disk ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An app whose deps venv (Django: about 40 MB) cannot fit in 8 MiB; its uv cache."""
    root = tmp_path_factory.mktemp("big")
    cache = root / "uv-cache"
    project = make_app(root / "app", cache,
                       dependencies=("six==1.16.0", "idna==3.10", "django==5.2.8"))
    return project, cache


CHECK_STORE = """\
import json, os, sys
from pathlib import Path
from venvseal.store.nar import nar_hash
root = Path(sys.argv[1])
entries = sorted(e.name for e in root.iterdir() if not e.name.startswith("."))
bad = []
for name in entries:
    meta = root / ".meta" / f"{name}.json"
    recorded = json.loads(meta.read_text())["narHash"] if meta.exists() else None
    if recorded != nar_hash(root / name).hash.sri:
        bad.append(name)
print(json.dumps({"entries": entries, "bad": bad, "tmp": sorted(os.listdir(root / ".tmp"))}))
"""


def test_full_store_file_system_gives_one_line_and_leaves_nothing(
        big_app: tuple[Path, Path], tmp_path: Path) -> None:
    project, cache = big_app
    mount, store = tmp_path / "small", tmp_path / "small" / "store"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-ec",
                            f"mount -t tmpfs -o size=8m tmpfs {shlex.quote(str(mount))}"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace: {probe.stderr.strip()}")
    py, q = shlex.quote(sys.executable), lambda p: shlex.quote(str(p))
    (tmp_path / "check.py").write_text(CHECK_STORE)
    script = f"""
mount -t tmpfs -o size=8m tmpfs {q(mount)}
set +e
{py} -m venvseal --store {q(store)} build --uv-cache {q(cache)} {q(project)} \
    > {q(tmp_path / "build.out")} 2> {q(tmp_path / "build.err")}
echo $? > {q(tmp_path / "code")}
set -e
{py} {q(tmp_path / "check.py")} {q(store)} > {q(tmp_path / "after-build.json")}
{py} -m venvseal --json --store {q(store)} verify > {q(tmp_path / "verify.json")}
{py} -m venvseal --json --store {q(store)} gc > {q(tmp_path / "gc.json")}
{py} {q(tmp_path / "check.py")} {q(store)} > {q(tmp_path / "after-gc.json")}
"""
    done = subprocess.run(["unshare", "-m", "sh", "-ec", script], capture_output=True,
                          text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "build.err").read_text()
    assert (tmp_path / "code").read_text().strip() == "1", err
    assert "building the dependency venv of demo" in err  # it failed in uv, mid-build
    assert error_lines(Run(1, "", err)) == [
        f"the store at {store} is full while building demo-deps; free space (venvseal gc) or "
        "pass --store DIR"], err
    assert "Traceback" not in err
    for name in ("after-build.json", "after-gc.json"):
        state = json.loads((tmp_path / name).read_text())
        assert state["bad"] == [], f"{name}: partial or damaged paths {state['bad']}"
        assert state["tmp"] == [], f"{name}: debris in .tmp: {state['tmp']}"
    assert json.loads((tmp_path / "verify.json").read_text())["ok"] is True


# Secrets -------------------------------------------------------------------------------------

ENV_SECRETS = {"VENVSEAL_TEST_SECRET": "s3cr3t-env", "AWS_SECRET_ACCESS_KEY": "s3cr3t-aws-key"}
# Build steps that write their whole environment into the files they install.
DUMP_ENV = """\
import os
from setuptools import setup

os.makedirs("{package}", exist_ok=True)
with open("{package}/_env.py", "w") as f:
    f.write("ENV = %r\\n" % sorted(os.environ.items()))
setup({args})
"""


def files_containing(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


def recording_app(root: Path, cache: Path, *, name: str, dep: str, setup_py: str,
                  verify: str) -> Path:
    """An app (locked) whose path dependency ``dep`` (built in the deps stage) and workspace
    member (built offline in the assembly stage) run ``setup_py`` (a template of
    ``package`` and ``args``) when they are built; ``verify`` is its [verify] table's body."""
    project = make_app(root / "app", cache, name=name, dependencies=("six==1.16.0", dep),
                       lock=False)
    with (project / "pyproject.toml").open("a") as f:
        f.write(f'{dep} = {{ path = "vendor/{dep}" }}\n')  # [tool.uv.sources] is last
    write(project / f"vendor/{dep}/pyproject.toml",
          f'[project]\nname = "{dep}"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'
          '[build-system]\nrequires = ["setuptools==80.9.0"]\n'
          'build-backend = "setuptools.build_meta"\n')
    write(project / f"vendor/{dep}/{dep}/__init__.py", "")
    write(project / f"vendor/{dep}/setup.py",
          setup_py.format(package=dep, args=f'packages=["{dep}"]'))
    write(project / "packages/member/setup.py", setup_py.format(package="src/member", args=""))
    with (project / "venvseal.toml").open("a") as f:
        f.write(f"\n[verify]\n{verify}")
    uv_lock(project, cache)
    return project


@pytest.fixture(scope="module")
def env_dumping_app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An app whose deps-stage and assembly-stage builds record their environment."""
    root = tmp_path_factory.mktemp("secrets")
    cache = root / "uv-cache"
    project = recording_app(root, cache, name="sec", dep="envdump", setup_py=DUMP_ENV,
                            verify='imports = ["envdump._env", "member._env"]\n'
                                   'commands = ["env"]\n')
    return project, cache


def with_secrets(argv: list[str]) -> Run:
    done = subprocess.run([sys.executable, "-m", "venvseal", *argv], capture_output=True,
                          text=True, check=False, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ, **ENV_SECRETS})
    return Run(done.returncode, done.stdout, done.stderr)


def test_host_variables_never_reach_build_steps(env_dumping_app: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    project, cache = env_dumping_app
    store = tmp_path / "store"
    run = with_secrets(["--json", "-v", "--store", str(store), "build", "--update-hash",
                        "--uv-cache", str(cache), str(project)])
    assert run.code == 0, run.err
    # The dumps exist, in the deps venv and in the closure: the check below can fail.
    dumped = files_containing(store, b"SOURCE_DATE_EPOCH")
    assert any("/envdump/_env.py" in f and "-sec-deps/" in f for f in dumped), dumped
    assert any("/member/_env.py" in f and "-sec-1.0.0/" in f for f in dumped), dumped
    assert files_containing(store, b"s3cr3t") == []
    assert "s3cr3t" not in run.out and "s3cr3t" not in run.err
    assert "$ " in run.err  # -v logged the commands

    # A verify command that prints its environment and fails shows it in the error.
    failing = tmp_path / "failing"
    shutil.copytree(project, failing, symlinks=True)
    text = (failing / "venvseal.toml").read_text()
    (failing / "venvseal.toml").write_text(text.replace('commands = ["env"]',
                                                        'commands = ["env", "env; exit 3"]'))
    before = store_snapshot(store)
    run = with_secrets(["--json", "-v", "--store", str(store), "build", "--uv-cache", str(cache),
                        str(failing)])
    assert run.code == 1, run.err
    error = run.json()["error"]
    assert "verify.commands[1] failed (exit 3)" in error
    assert "SOURCE_DATE_EPOCH=315532800" in error
    assert "s3cr3t" not in run.out and "s3cr3t" not in run.err
    assert store_snapshot(store) == before


TOKEN = "s3cr3t-token"


def make_wheel() -> bytes:
    """tinypkg 1.0, a pure-Python wheel with a true RECORD."""
    files = {"tinypkg/__init__.py": b"VALUE = 1\n",
             "tinypkg-1.0.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: venvseal-tests\n"
                                            b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in files.items())
    files["tinypkg-1.0.dist-info/RECORD"] = (record + "tinypkg-1.0.dist-info/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


WHEEL_NAME = "tinypkg-1.0-py3-none-any.whl"
WHEEL = make_wheel()


class PrivateIndex(http.server.BaseHTTPRequestHandler):
    """A PEP 503 simple index that wants HTTP basic auth as __token__:TOKEN."""

    expected = "Basic " + base64.b64encode(f"__token__:{TOKEN}".encode()).decode()
    refused: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, *, body: bool) -> None:
        if self.headers.get("Authorization") != self.expected:
            PrivateIndex.refused.append(self.path)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        digest = hashlib.sha256(WHEEL).hexdigest()
        pages = {"/simple/": b'<a href="tinypkg/">tinypkg</a>',
                 "/simple/tinypkg/":
                     f'<a href="/files/{WHEEL_NAME}#sha256={digest}">{WHEEL_NAME}</a>'.encode(),
                 f"/files/{WHEEL_NAME}": WHEEL}
        data = pages.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.path.endswith("/")
                         else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def private_index_project(root: Path, index: str, token: str) -> Path:
    netloc = index.removeprefix("http://")
    write(root / "pyproject.toml",
          '[project]\nname = "private"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
          'dependencies = ["tinypkg==1.0"]\n\n[tool.uv]\npackage = false\n\n'
          f'[[tool.uv.index]]\nname = "private"\n'
          f'url = "http://__token__:{token}@{netloc}/simple/"\ndefault = true\n')
    write(root / "venvseal.toml", f'[app]\nname = "private"\nversion = "1.0.0"\n\n'
                                  f'[toolchain]\npython = "{PYTHON}"\n\n[deps]\nhash = ""\n')
    return root


def test_an_index_token_never_leaves_the_project(tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "uv-cache"
    with serving(PrivateIndex) as index:
        project = private_index_project(tmp_path / "app", index, TOKEN)
        uv_lock(project, tmp_path / "lock-cache")
        # uv keeps credentials out of the lock: it names the index by its bare URL.
        lock = (project / "uv.lock").read_text()
        assert TOKEN not in lock and f'registry = "{index}/simple/"' in lock
        run = venvseal("--json", "-v", "--store", store, "deps", "--update-hash", "--uv-cache",
                       cache, project)
        assert run.code == 0, run.err
        venv = Path(run.json()["path"])
        assert (venv / SITE / "tinypkg/__init__.py").is_file()  # fetched with the token
        assert files_containing(store, TOKEN.encode()) == []
        assert TOKEN not in run.out and TOKEN not in run.err
        assert "$ " in run.err  # -v logged the commands

        # A wrong token: the index refuses it, and the error still shows no token.
        PrivateIndex.refused.clear()
        wrong = private_index_project(tmp_path / "wrong", index, "s3cr3t-wrong")
        shutil.copyfile(project / "uv.lock", wrong / "uv.lock")
        before = store_snapshot(store)
        run = venvseal("--json", "-v", "--store", store, "deps", "--uv-cache",
                       tmp_path / "cold-cache", wrong)
    assert run.code == 1, run.err
    assert PrivateIndex.refused, "the index never refused a request"
    error = run.json()["error"]
    assert error.startswith(f"the package index refused uv: HTTP 401 Unauthorized for {index}/")
    assert "[[tool.uv.index]]" in error
    assert "s3cr3t" not in run.out and "s3cr3t" not in run.err
    assert store_snapshot(store) == before


# Who a build step runs as ------------------------------------------------------------------

WHOAMI = """\
import os
from setuptools import setup

os.makedirs("{package}", exist_ok=True)
with open("{package}/_who.py", "w") as f:
    f.write("UID = %d\\nSHADOW = %r\\n" % (os.getuid(), os.path.exists("/etc/shadow")))
setup({args})
"""
# A verify command and `venvseal run`: fail loudly if they are root or see /etc/shadow.
UNPRIVILEGED = 'test "$(id -u)" != 0 && test ! -e /etc/shadow && test ! -e /etc/gshadow'


def test_every_build_step_runs_unprivileged_without_host_secrets(tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache"
    project = recording_app(tmp_path, cache, name="who", dep="whodeps", setup_py=WHOAMI,
                            verify='imports = ["whodeps._who", "member._who"]\n'
                                   f"commands = ['{UNPRIVILEGED}', "
                                   '"@python@ -c \'import os; assert os.getuid() != 0\'"]\n')
    store = tmp_path / "store"
    built = venvseal("--json", "--store", store, "build", "--update-hash", "--uv-cache", cache,
                     project)
    assert built.code == 0, built.err
    assert built.json()["verified"]["commands"] == 2  # the verify step's own check passed
    deps, closure = Path(built.json()["deps"]), Path(built.json()["path"])
    # The deps stage (networked) built whodeps; the assembly stage built the member.
    [in_deps] = deps.rglob("whodeps/_who.py")
    [in_closure] = closure.rglob("member/_who.py")
    for who in (in_deps, in_closure):
        assert who.read_text() == "UID = 1000\nSHADOW = False\n", who
    ran = venvseal_process("run", project, "--store", store, "--uv-cache", cache, "--",
                           "sh", "-c", f"{UNPRIVILEGED} && id -un")
    assert (ran.code, ran.out) == (0, "venvseal\n"), ran.err
    assert os.path.exists("/etc/shadow")  # control: the host has the file the steps lack
