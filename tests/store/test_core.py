"""The content-addressed store, on real folders, real locks and real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.unprivileged import User

from venvseal import fsutil
from venvseal.errors import StoreError, UsageError
from venvseal.hashes import Sha256
from venvseal.store.core import (
    CANONICAL_MTIME,
    HashMismatchError,
    PathInfo,
    Store,
    StoreAccessError,
    StoreFullError,
    StoreNameError,
    StorePath,
    TreeSink,
    add_made,
    default_store_root,
)
from venvseal.store.nar import NarError, nar_hash

Helper = Callable[..., "subprocess.Popen[str]"]
BASENAME = re.compile(r"[0123456789abcdfghijklmnpqrsvwxyz]{32}-(.+)")
WAIT = 30.0  # seconds a test waits for another process before failing


def make_tree(out: Path, text: str = "hello") -> None:
    """A small tree with a file, an executable, a symlink and a subdirectory."""
    (out / "lib").mkdir(parents=True)
    (out / "lib" / "data.txt").write_text(text)
    (out / "run").write_text("#!/bin/sh\necho hi\n")
    (out / "run").chmod(0o775)
    (out / "link").symlink_to("lib/data.txt")


def tree_producer(text: str = "hello", calls: list[Path] | None = None) -> Callable[[Path], None]:
    def produce(out: Path) -> None:
        if calls is not None:
            calls.append(out)
        make_tree(out, text)

    return produce


def never(out: Path) -> None:
    raise AssertionError(f"produce must not be called (asked to make {out})")


def leftovers(root: Path) -> dict[str, list[str]]:
    """What a store holds besides its empty layout (lock files aside)."""
    return {
        "paths": sorted(n for n in os.listdir(root) if not n.startswith(".")),
        "meta": sorted(os.listdir(root / ".meta")),
        "tmp": sorted(os.listdir(root / ".tmp")),
    }


EMPTY: dict[str, list[str]] = {"paths": [], "meta": [], "tmp": []}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as opened:
        yield opened


def walk(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.iterdir()):
            yield from walk(child)


# ---------------------------------------------------------------------------------------------
# Processes: a helper script run with this interpreter, talking through files.

HELPER = textwrap.dedent(
    """
    import fcntl, json, os, sys, time
    from pathlib import Path
    from venvseal.store.core import Store

    def wait_for(file):
        deadline = time.monotonic() + 60
        while not os.path.exists(file):
            if time.monotonic() > deadline:
                sys.exit("timed out waiting for " + file)
            time.sleep(0.02)

    action, root, name, scratch = sys.argv[1:5]
    scratch = Path(scratch)
    store = Store(Path(root))
    path = store.make_path(name, "fingerprint")

    def produce(out):
        with open(scratch / "calls", "a") as f:
            f.write(name + "\\n")
        (scratch / ("started-" + name)).touch()
        if action == "add-held":
            wait_for(str(scratch / ("release-" + name)))
        out.mkdir()
        (out / "file").write_text(name)

    def on_wait(p):
        (scratch / ("waiting-" + str(os.getpid()))).touch()

    if action in ("add", "add-held"):
        info = store.add(path, produce, on_wait=on_wait)
        print(json.dumps({"path": str(info.path), "hash": info.nar_hash.sri,
                          "size": info.nar_size}))
    elif action == "pin":  # add (reusing) and keep the store open until told to stop
        store.add(path, produce)
        print("ready", flush=True)
        sys.stdin.read()
    elif action == "flock":  # hold a path's lock file the way a builder does
        fd = os.open(os.path.join(root, ".locks", path.name + ".lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("ready", flush=True)
        sys.stdin.read()
    """
)


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[Helper]:
    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    started: list[subprocess.Popen[str]] = []

    def start(action: str, root: Path, name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(script), action, str(root), name, str(scratch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_for(file: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not file.exists():
        assert time.monotonic() < deadline, f"{file} never appeared"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else line


# ---------------------------------------------------------------------------------------------
# Names


def test_make_path_is_deterministic_and_nix_shaped(tmp_path: Path) -> None:
    one, other = Store(tmp_path / "a"), Store(tmp_path / "b")
    path = one.make_path("app-1.0", "inputs v1")
    match = BASENAME.fullmatch(path.name)
    assert match is not None and match.group(1) == "app-1.0"
    assert path.parent == one.root
    assert path == one.make_path("app-1.0", "inputs v1")
    assert path.name == other.make_path("app-1.0", "inputs v1").name  # independent of the root
    assert path.name != one.make_path("app-1.0", "inputs v2").name
    assert path.name[:32] != one.make_path("app-1.1", "inputs v1").name[:32]


def test_fixed_path_depends_only_on_hash_and_name(store: Store) -> None:
    first, second = Sha256(bytes(32)), Sha256(bytes([1]) * 32)
    path = store.make_fixed_path("deps", first)
    assert BASENAME.fullmatch(path.name)
    assert path == store.make_fixed_path("deps", first)
    assert path != store.make_fixed_path("deps", second)
    assert path != store.make_fixed_path("deps2", first)
    assert path != store.make_path("deps", f"fixed:out:r:sha256:{first.base16}:")


@pytest.mark.parametrize("name", ["", ".hidden", "a b", "a/b", "caf\u00e9", "x:y", "x" * 212])
def test_bad_names_are_rejected(store: Store, name: str) -> None:
    with pytest.raises(StoreNameError, match="not a valid store path name") as info:
        store.make_path(name, "fp")
    assert isinstance(info.value, UsageError)
    with pytest.raises(StoreNameError):
        store.make_fixed_path(name, Sha256(bytes(32)))


def test_longest_name_is_accepted(store: Store) -> None:
    assert store.make_path("x" * 211, "fp").name.endswith("-" + "x" * 211)


def test_parse_path(store: Store, tmp_path: Path) -> None:
    path = store.make_path("app", "fp")
    assert store.parse_path(str(path)) == path
    (tmp_path / "result").symlink_to(path)
    assert store.parse_path(str(tmp_path / "result")) == path
    for bad in [str(tmp_path), str(path / "lib"), str(store.root / "not-a-store-path")]:
        with pytest.raises(UsageError, match=re.escape(f"in the store at {store.root}")):
            store.parse_path(bad)


# ---------------------------------------------------------------------------------------------
# Adding


def test_add_builds_once_then_reuses(store: Store) -> None:
    calls: list[Path] = []
    path = store.make_path("app", "fp")
    first = store.add(path, tree_producer(calls=calls), inputs={"python": "3.14", "n": [1, 2]})
    again = store.add(path, never, inputs={"python": "3.14", "n": [1, 2]})
    assert len(calls) == 1 and not calls[0].exists()  # produce wrote into a temp dir
    assert again == first == store.query(path)
    assert first.inputs == {"python": "3.14", "n": [1, 2]}
    assert store.is_valid(path) and store.paths() == [path]
    assert (path / "lib" / "data.txt").read_text() == "hello"
    assert leftovers(store.root)["tmp"] == []


def test_add_made_gives_back_what_produce_returned_only_when_it_ran(store: Store) -> None:
    path = store.make_path("app", "fp")

    def produce(out: Path) -> str:
        out.write_text("made\n")
        return "report"

    first = add_made(store, path, produce)
    again = add_made(store, path, never)
    assert first == (store.query(path), "report")
    assert again == (store.query(path), None)  # valid: produce did not run


def test_added_path_is_sealed(store: Store) -> None:
    def produce(out: Path) -> None:
        make_tree(out)
        (out / "setuid").write_text("x")
        (out / "setuid").chmod(0o4755)
        (out / "private").mkdir(mode=0o700)

    path = store.add(store.make_path("app", "fp"), produce).path
    modes = {}
    for entry in walk(path):
        st = entry.lstat()
        if not entry.is_symlink():
            modes[entry.relative_to(path).as_posix()] = stat.S_IMODE(st.st_mode)
        assert st.st_mtime_ns == CANONICAL_MTIME * 10**9, entry
    assert modes == {".": 0o555, "lib": 0o555, "lib/data.txt": 0o444, "run": 0o555,
                     "setuid": 0o555, "private": 0o555}


def test_sealing_never_touches_a_hard_linked_file_outside(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "cache-file"
    outside.write_text("cached")
    outside.chmod(0o644)
    before = outside.stat()

    def produce(out: Path) -> None:
        out.mkdir()
        os.link(outside, out / "file")

    path = store.add(store.make_path("app", "fp"), produce).path
    after = outside.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_mtime_ns) == (0o644, before.st_mtime_ns)
    assert (path / "file").read_text() == "cached"
    assert (path / "file").stat().st_ino != after.st_ino


def test_relative_links_into_a_reference_resolve_during_the_build(store: Store) -> None:
    # As the closure's links into the relinked deps do (forest.py): the build dir holds a
    # link per reference beside the output, so ../<ref>/... resolves there as in the store.
    lib = store.add(store.make_path("lib", "fp"), tree_producer("lib")).path
    seen: list[str] = []

    def produce(out: Path) -> None:
        out.mkdir()
        (out / "linked").symlink_to(f"../{lib.name}/lib/data.txt")
        seen.append((out / "linked").read_text())

    app = store.add(store.make_path("app", "fp"), produce, references=[lib]).path
    assert seen == [(lib / "lib/data.txt").read_text()]
    assert (app / "linked").read_text() == seen[0]
    assert sorted(os.listdir(app)) == ["linked"]  # the reference link stays outside
    assert os.listdir(store.root / ".tmp") == []


def test_meta_records_the_nar_hash(store: Store) -> None:
    lib = store.add(store.make_path("lib", "fp"), tree_producer("lib"))
    info = store.add(store.make_path("app", "fp"), tree_producer(), references=[lib.path])
    assert info.nar_hash == nar_hash(info.path).hash
    meta = json.loads((store.root / ".meta" / f"{info.path.name}.json").read_text())
    assert meta == {"narHash": info.nar_hash.sri, "narSize": nar_hash(info.path).size,
                    "references": [lib.path.name], "inputs": None}
    assert info.references == (lib.path,)
    if shutil.which("nix-hash"):  # the reference implementation agrees
        out = subprocess.run(["nix-hash", "--type", "sha256", "--base32", str(info.path)],
                             check=True, capture_output=True, text=True).stdout.strip()
        assert out == info.nar_hash.nix32


def test_a_single_file_can_be_a_store_path(store: Store) -> None:
    def produce(out: Path) -> None:
        out.write_text("hi")

    info = store.add(store.make_path("note.txt", "fp"), produce)
    assert info.path.is_file() and stat.S_IMODE(info.path.stat().st_mode) == 0o444


def test_missing_reference_is_refused(store: Store) -> None:
    ghost = store.make_path("ghost", "fp")
    with pytest.raises(StoreError, match=f"refers to {re.escape(str(ghost))}, which is not"):
        store.add(store.make_path("app", "fp"), never, references=[ghost])
    assert leftovers(store.root) == EMPTY


def test_fixed_output_with_the_right_hash(store: Store, tmp_path: Path) -> None:
    make_tree(tmp_path / "reference")
    expected = nar_hash(tmp_path / "reference").hash
    path = store.make_fixed_path("deps", expected)
    assert store.add(path, tree_producer(), expected=expected).nar_hash == expected
    assert store.add(path, never, expected=expected).path == path


def test_fixed_output_with_a_wrong_hash_adds_nothing(store: Store, tmp_path: Path) -> None:
    make_tree(tmp_path / "reference")
    actual = nar_hash(tmp_path / "reference").hash
    declared = Sha256(bytes(32))
    path = store.make_fixed_path("deps", declared)
    with pytest.raises(HashMismatchError) as info:
        store.add(path, tree_producer(), expected=declared)
    lines = str(info.value).splitlines()
    assert "hash mismatch" in lines[0] and str(path) in lines[0]
    assert lines[1] == f"  specified: {declared.sri}"
    assert lines[2] == f"  got:       {actual.sri}"
    assert actual.sri in lines[3]
    assert info.value.got == actual
    assert leftovers(store.root) == EMPTY


def test_reuse_with_a_different_expected_hash_is_a_mismatch(store: Store) -> None:
    path = store.make_path("app", "fp")
    info = store.add(path, tree_producer())
    with pytest.raises(HashMismatchError, match="specified: sha256-AAAA"):
        store.add(path, never, expected=Sha256(bytes(32)))
    assert store.query(path) == info


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failing_produce_leaves_nothing(store: Store, error: BaseException) -> None:
    def produce(out: Path) -> None:
        make_tree(out)
        (out / "lib").chmod(0o500)  # a half-made read-only tree must still go
        raise error

    with pytest.raises(type(error)):
        store.add(store.make_path("app", "fp"), produce)
    assert leftovers(store.root) == EMPTY


def test_produce_that_creates_nothing_is_an_error(store: Store) -> None:
    with pytest.raises(StoreError, match="created nothing"):
        store.add(store.make_path("app", "fp"), lambda out: None)
    assert leftovers(store.root) == EMPTY


def test_unhashable_content_leaves_nothing(store: Store) -> None:
    def produce(out: Path) -> None:
        out.mkdir()
        os.mkfifo(out / "pipe")

    with pytest.raises(NarError, match="named pipe"):
        store.add(store.make_path("app", "fp"), produce)
    assert leftovers(store.root) == EMPTY


# ---------------------------------------------------------------------------------------------
# Crash debris


def simulate_crash_debris(root: Path, store: Store) -> tuple[StorePath, StorePath, StorePath]:
    """Leave what a killed build or gc leaves: a temp dir, a meta alone, a path alone."""
    temp_only, meta_only, tree_only = (store.make_path(n, "fp") for n in ("a", "b", "c"))
    temp = root / ".tmp" / f"{temp_only.name}~99999~dead"
    make_tree(temp / temp_only.name)
    (temp / temp_only.name / "lib").chmod(0o555)
    (root / ".meta" / f"{meta_only.name}.json").write_text("{}")
    make_tree(tree_only)
    tree_only.chmod(0o555)
    return temp_only, meta_only, tree_only


def test_debris_is_cleaned_on_open_and_builds_succeed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    paths = simulate_crash_debris(root, Store(root))
    assert leftovers(root) != EMPTY
    store = Store(root)
    assert leftovers(root) == EMPTY
    for path in paths:
        assert store.add(path, tree_producer()).path == path
    assert store.paths() == sorted(paths)


def test_a_top_folder_left_writable_by_a_crash_is_sealed_on_open(tmp_path: Path) -> None:
    """Killed between publishing's rename and sealing the top folder (which stays writable
    until then, so an unprivileged user can rename it): the next open seals it."""
    root = tmp_path / "store"
    with Store(root) as store:
        path = store.add(store.make_path("app", "fp"), tree_producer()).path
        info = store.query(path)
    os.chmod(path, 0o755)
    os.utime(path, (5, 5))
    with Store(root) as store:
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == 0o555 and st.st_mtime_ns == CANONICAL_MTIME * 10**9
        assert store.query(path) == info and [r.ok for r in store.verify()] == [True]


def test_debris_is_cleaned_by_add(store: Store) -> None:
    paths = simulate_crash_debris(store.root, store)
    for path in paths:
        assert not store.is_valid(path)
        store.add(path, tree_producer())
    assert leftovers(store.root)["tmp"] == []
    assert store.paths() == sorted(paths)


def test_debris_of_a_locked_path_is_left_alone(tmp_path: Path, helper: Helper) -> None:
    root = tmp_path / "store"
    store = Store(root)
    tree_only = store.make_path("c", "fingerprint")
    holder = helper("flock", root, "c")
    ready(holder)
    make_tree(tree_only)
    Store(root)  # another open: the path's builder may still be running
    assert tree_only.exists()
    holder.communicate(timeout=WAIT)
    Store(root)
    assert not tree_only.exists()


# ---------------------------------------------------------------------------------------------
# Processes


def test_two_processes_adding_one_path_build_it_once(tmp_path: Path, helper: Helper) -> None:
    root, scratch = tmp_path / "store", tmp_path / "scratch"
    first = helper("add-held", root, "same")
    wait_for(scratch / "started-same")
    second = helper("add", root, "same")
    wait_for(scratch / f"waiting-{second.pid}")  # it found the lock held and waits
    assert second.poll() is None
    (scratch / "release-same").touch()
    results = [finish(first), finish(second)]
    assert (scratch / "calls").read_text() == "same\n"
    assert results[0] == results[1]
    assert Store(root).query(StorePath(Path(str(results[0]["path"])))) is not None


def test_different_paths_do_not_block_each_other(tmp_path: Path, helper: Helper) -> None:
    root, scratch = tmp_path / "store", tmp_path / "scratch"
    slow = helper("add-held", root, "slow")
    wait_for(scratch / "started-slow")
    quick = finish(helper("add", root, "quick"))  # finishes while "slow" is still building
    assert slow.poll() is None
    (scratch / "release-slow").touch()
    assert finish(slow)["path"] != quick["path"]
    assert sorted((scratch / "calls").read_text().split()) == ["quick", "slow"]


# ---------------------------------------------------------------------------------------------
# Unusable roots


def assert_points_to_fix(message: str, root: Path) -> None:
    assert str(root) in message
    assert "--store" in message and "VENVSEAL_STORE" in message
    assert "\n" not in message


def test_root_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.write_text("")
    with pytest.raises(StoreAccessError, match="is not a directory") as info:
        Store(root)
    assert_points_to_fix(str(info.value), root)


def test_root_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "store"
    with pytest.raises(StoreAccessError, match="is not writable") as info:
        Store(root)
    assert_points_to_fix(str(info.value), root)


def test_root_in_a_read_only_folder(unprivileged: User) -> None:
    """As the user the test creates: root ignores the mode bits (see test_unprivileged)."""
    parent = unprivileged.home / "ro"
    parent.mkdir(mode=0o555)
    unprivileged.own(parent)
    done = unprivileged.python(textwrap.dedent("""
        import sys
        from pathlib import Path
        from venvseal.store.core import Store, StoreAccessError
        try:
            Store(Path(sys.argv[1]))
        except StoreAccessError as err:
            print(err)
        """), parent / "store")
    assert done.code == 0, done.err
    assert "is not writable" in done.out
    assert_points_to_fix(done.out.strip(), parent / "store")


def in_private_mount(tmp_path: Path, setup: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new mount namespace after ``setup`` (shell); CI runs as root."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    assert probe.returncode == 0, f"cannot make a mount namespace (unshare -m): {probe.stderr!r}"
    script = tmp_path / "in_mount.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        ["unshare", "-m", "sh", "-ec", f'{setup}\nexec "$0" "$1"', sys.executable, str(script)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("exists", [False, True], ids=["new", "existing"])
def test_root_on_a_read_only_file_system(tmp_path: Path, exists: bool) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    if exists:
        Store(mount / "store")
    done = in_private_mount(
        tmp_path,
        f"mount --bind {mount} {mount}; mount -o remount,bind,ro {mount}",
        f"""
        from pathlib import Path
        from venvseal.store.core import Store, StoreAccessError
        try:
            Store(Path({str(mount / "store")!r}))
        except StoreAccessError as err:
            print(err)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "Read-only file system" in done.stdout
    assert_points_to_fix(done.stdout.strip(), mount / "store")


def test_read_only_commands_on_a_read_only_file_system(tmp_path: Path) -> None:
    """verify and gc --dry-run read a store on a read-only mount; gc is refused."""
    mount = tmp_path / "mnt"
    with Store(mount / "store") as store:
        kept = store.add(store.make_path("kept", "x"), make_tree).path
        store.add_root(tmp_path / "result", kept)
        loose = store.add(store.make_path("loose", "x"), tree_producer("other")).path
    shutil.rmtree(mount / "store" / ".locks")  # a store copied without its lock files
    (mount / "store" / ".locks").mkdir()
    done = in_private_mount(
        tmp_path,
        f"mount --bind {mount} {mount}; mount -o remount,bind,ro {mount}",
        f"""
        import contextlib, io, json, sys
        from venvseal.cli.main import main
        for argv in (["verify"], ["gc", "--dry-run"], ["gc"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(["--json", *argv, "--store", {str(mount / "store")!r}])
            print("code", code)
            if code == 0:
                print(json.dumps(json.loads(out.getvalue())))
        """,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    codes = [line for line in lines if line.startswith("code ")]
    assert codes == ["code 0", "code 0", "code 2"], done.stdout + done.stderr
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert results[0]["checked"] == 2 and results[0]["changed"] == []
    assert results[1]["deleted"] == [str(loose)]
    assert "Read-only file system" in done.stderr
    assert Store(mount / "store").is_valid(loose)


def test_full_file_system_leaves_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    done = in_private_mount(
        tmp_path,
        f"mount -t tmpfs -o size=1m tmpfs {mount}",
        f"""
        import os
        from pathlib import Path
        from venvseal.store.core import Store, StoreFullError
        store = Store(Path({str(mount / "store")!r}))
        def produce(out):
            out.mkdir()
            (out / "big").write_bytes(b"x" * (4 << 20))
        try:
            store.add(store.make_path("big", "fp"), produce)
        except StoreFullError as err:
            print(err)
        print(sorted(os.listdir(store.root / ".tmp")), sorted(os.listdir(store.root / ".meta")))
        """,
    )
    assert done.returncode == 0, done.stderr
    message, listing = done.stdout.splitlines()
    assert message == f"the store at {mount / 'store'} is full while building big; " \
                      "free space (venvseal gc) or pass --store DIR"
    assert listing == "[] []"


def test_store_full_error_is_a_store_error(tmp_path: Path) -> None:
    assert issubclass(StoreFullError, StoreError) and issubclass(StoreAccessError, StoreError)


# ---------------------------------------------------------------------------------------------
# Verify


def test_verify_finds_a_modified_path(store: Store) -> None:
    good = store.add(store.make_path("good", "fp"), tree_producer()).path
    bad = store.add(store.make_path("bad", "fp"), tree_producer()).path
    data = bad / "lib" / "data.txt"
    data.chmod(0o644)
    data.write_bytes(b"J" + data.read_bytes()[1:])
    results = {r.path: r for r in store.verify()}
    assert results[good].ok and results[good].expected == results[good].got
    assert not results[bad].ok and results[bad].expected != results[bad].got
    assert results[bad].got == nar_hash(bad).hash
    assert [r.path for r in store.verify([good])] == [good]
    with pytest.raises(StoreError, match="not a valid path"):
        store.verify([store.make_path("ghost", "fp")])


# ---------------------------------------------------------------------------------------------
# Roots and garbage collection


def build_app(root: Path, out_link: Path) -> tuple[StorePath, StorePath, StorePath]:
    """lib <- app (rooted by ``out_link``) and an unrelated junk path; the store is closed."""
    with Store(root) as store:
        lib = store.add(store.make_path("lib", "fp"), tree_producer("lib")).path
        app = store.add(store.make_path("app", "fp"), tree_producer("app"), references=[lib]).path
        junk = store.add(store.make_path("junk", "fp"), tree_producer("x" * 10_000)).path
        store.add_root(out_link, app)
    return lib, app, junk


def test_gc_keeps_rooted_closures_and_deletes_the_rest(tmp_path: Path) -> None:
    root, link = tmp_path / "store", tmp_path / "result"
    lib, app, junk = build_app(root, link)
    store = Store(root)
    assert store.roots() == [(link, app)]
    assert os.readlink(link) == str(app)

    dry = store.gc(dry_run=True)
    assert dry.deleted == (junk,) and dry.freed_bytes > 0
    assert store.paths() == sorted([lib, app, junk])

    result = store.gc()
    assert result == dry
    assert store.paths() == sorted([lib, app])
    assert not junk.exists() and not (root / ".meta" / f"{junk.name}.json").exists()
    assert not (root / ".locks" / f"{junk.name}.lock").exists()

    link.unlink()
    assert store.roots() == []
    assert os.listdir(root / ".roots") == []
    assert store.gc().deleted == tuple(sorted([app, lib]))
    assert store.paths() == [] and leftovers(root) == EMPTY
    assert os.listdir(root / ".locks") == [".gc.lock"]


def test_gc_keeps_paths_a_live_store_uses(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as builder:
        lib = builder.add(builder.make_path("lib", "fp"), tree_producer()).path
        app = builder.add(builder.make_path("app", "fp"), tree_producer(), references=[lib]).path
        assert Store(root).gc().deleted == ()  # the builder still holds them
    assert Store(root).gc().deleted == tuple(sorted([app, lib]))


def test_gc_skips_a_path_another_process_holds(tmp_path: Path, helper: Helper) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        lib = store.add(store.make_path("lib", "fp"), tree_producer()).path
        held = store.make_path("held", "fingerprint")
        store.add(held, tree_producer(), references=[lib])
        junk = store.add(store.make_path("junk", "fp"), tree_producer()).path
    user = helper("pin", root, "held")
    ready(user)
    store = Store(root)
    assert store.gc(dry_run=True).deleted == (junk,)
    assert store.gc().deleted == (junk,)
    assert store.paths() == sorted([lib, held])
    user.communicate("", timeout=WAIT)
    assert store.gc().deleted == tuple(sorted([held, lib]))


def test_gc_keeps_the_references_of_a_path_being_built(tmp_path: Path, helper: Helper) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        libs = [store.add(store.make_path(f"lib{i}", "fp"), tree_producer()).path
                for i in range(4)]
        held = store.make_path("held", "fingerprint")
        store.add(held, tree_producer(), references=libs)
    assert min(libs) < held  # some reference comes first in name order: order matters
    builder = helper("flock", root, "held")  # its lock only, not its references'
    ready(builder)
    assert Store(root).gc().deleted == ()
    builder.communicate("", timeout=WAIT)
    assert Store(root).gc().deleted == tuple(sorted([held, *libs]))


def test_a_waiter_on_a_deleted_lock_file_does_not_get_the_lock(store: Store) -> None:
    lock = store.root / ".locks" / "example.lock"
    old = fsutil.lock_file(lock, shared=False)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(fsutil.lock_file(lock, shared=False)))
    waiter.start()
    time.sleep(0.2)  # let it block on the file about to be deleted
    os.unlink(lock)  # as gc deletes a collected path's lock file, and then someone
    new = fsutil.try_lock_file(lock, shared=False)  # locks the path's new lock file
    assert new is not None
    os.close(old)
    time.sleep(0.2)
    assert got == []  # the waiter saw its file was gone and now waits for the new one
    os.close(new)
    waiter.join(WAIT)
    assert got and os.fstat(got[0]).st_ino == lock.stat().st_ino
    os.close(got[0])


def test_add_root_replaces_a_symlink_but_not_a_file(store: Store, tmp_path: Path) -> None:
    one = store.add(store.make_path("one", "fp"), tree_producer()).path
    two = store.add(store.make_path("two", "fp"), tree_producer("2")).path
    link = tmp_path / "result"
    store.add_root(link, one)
    store.add_root(link, two)
    assert store.roots() == [(link, two)]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temp links left
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not a symlink"):
        store.add_root(tmp_path / "taken", one)
    assert (tmp_path / "taken").read_text() == "mine"
    with pytest.raises(StoreError, match="not in the store"):
        store.add_root(tmp_path / "r2", store.make_path("ghost", "fp"))


def test_roots_ignore_links_retargeted_outside_the_store(store: Store, tmp_path: Path) -> None:
    app = store.add(store.make_path("app", "fp"), tree_producer()).path
    link = tmp_path / "result"
    store.add_root(link, app)
    link.unlink()
    link.symlink_to(tmp_path)
    assert store.roots() == []


# ---------------------------------------------------------------------------------------------
# Where the store lives


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "/home/u/.local/share/venvseal/store"),
        ({"XDG_DATA_HOME": "/data"}, "/data/venvseal/store"),
        ({"XDG_DATA_HOME": "relative"}, "/home/u/.local/share/venvseal/store"),
        ({"XDG_DATA_HOME": ""}, "/home/u/.local/share/venvseal/store"),
        ({"VENVSEAL_STORE": "/s", "XDG_DATA_HOME": "/data"}, "/s"),
        ({"VENVSEAL_STORE": ""}, "/home/u/.local/share/venvseal/store"),
    ],
)
def test_default_store_root(env: dict[str, str], expected: str) -> None:
    assert default_store_root(env, Path("/home/u")) == Path(expected)


# Substituters -------------------------------------------------------------------------------


class CopyingSubstituter:
    """Gives paths from another store, as a remote cache would; records what it was asked."""

    def __init__(self, source: Store) -> None:
        self.source = source
        self.asked: list[tuple[str, Sha256 | None]] = []

    def fetch(self, sink: TreeSink, path: StorePath, expected: Sha256 | None
              ) -> PathInfo | None:
        self.asked.append((path.name, expected))
        info = self.source.query(StorePath(self.source.root / path.name))
        if info is None or (expected is not None and info.nar_hash != expected):
            return None  # a substituter falls back rather than fail the build
        with sink.scratch() as work:
            fsutil.link_tree(info.path, work / "tree")
            return sink.add_tree(path, work / "tree", nar=nar_hash(work / "tree"),
                                 references=(), inputs={"copied": True})


def must_not_build(out: Path) -> None:
    raise AssertionError(f"built {out.name} although a substituter has it")


def test_add_asks_substituters_before_building(tmp_path: Path) -> None:
    source = Store(tmp_path / "source")
    path = source.make_path("shared", "fp")
    built = source.add(path, make_tree)
    first, second = CopyingSubstituter(Store(tmp_path / "empty")), CopyingSubstituter(source)
    store = Store(tmp_path / "store", substituters=[first, second])
    mine = StorePath(store.root / path.name)
    got = store.realise(mine, must_not_build)
    info = got.info
    assert info.nar_hash == built.nar_hash and (got.how, got.fetched) == ("fetched", (mine,))
    assert first.asked == second.asked == [(path.name, None)]
    again = store.realise(mine, must_not_build)  # valid now: nobody is asked again
    assert (again.info, again.how, again.fetched) == (info, "valid", ())
    assert len(second.asked) == 1
    other = store.make_path("local-only", "fp")
    made = store.realise(other, make_tree)  # no substituter has it: built
    assert (made.path, made.how, made.fetched) == (other, "built", ())
    assert store.add(store.make_path("not-asked", "fp"), make_tree).path.name.endswith(
        "not-asked")
    assert len(second.asked) == 2  # add() itself never asks a substituter


def test_substitute_for_paths_built_outside_add(tmp_path: Path) -> None:
    source = Store(tmp_path / "source")
    built = source.add(source.make_path("fixed", "fp"), make_tree)
    substituter = CopyingSubstituter(source)
    store = Store(tmp_path / "store", substituters=[substituter])
    mine = StorePath(store.root / built.path.name)
    wrong = nar_hash(Path(__file__)).hash
    assert store.substitute(mine, wrong) is None  # the substituter refused it
    assert not store.is_valid(mine)
    got = store.substitute(mine, built.nar_hash)
    assert got is not None and got.info.nar_hash == built.nar_hash
    assert (got.how, got.fetched) == ("fetched", (mine,))
    assert substituter.asked == [(mine.name, wrong), (mine.name, built.nar_hash)]
    assert Store(tmp_path / "plain").substitute(mine) is None
