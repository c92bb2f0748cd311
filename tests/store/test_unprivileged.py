"""The store used by an unprivileged user (a user the test creates; CI runs as root).

Root bypasses the mode bits the store relies on (a sealed folder is read-only), so these run
every store operation, and the CLI, as that user, on a store of the user's own; and check
that root writing into a user's store leaves nothing the user cannot lock, collect or read.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
from pathlib import Path

import pytest
from support import write
from support.demo import DEMO, committed_rev
from support.unprivileged import User, user_uv

from venvseal.store.core import Store

OPERATIONS = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from venvseal.store.core import Store, copy_path

    root = Path(sys.argv[1])
    home = root.parent

    def tree(out):
        (out / "lib" / "deep").mkdir(parents=True)
        (out / "lib" / "deep" / "data.txt").write_text("hello")
        (out / "run").write_text("#!/bin/sh\\n")
        (out / "run").chmod(0o755)
        (out / "link").symlink_to("lib/deep/data.txt")

    report = {}
    with Store(root) as store:
        dep = store.add(store.make_path("dep", "x"), tree).path
        top = store.add(store.make_path("top", "x"), tree, references=[dep]).path
        single = store.add(store.make_path("file", "x"), lambda out: out.write_text("f")).path
        link = store.add(store.make_path("symlink", "x"), lambda out: out.symlink_to("x")).path
        with store.scratch() as work:
            (work / "out").mkdir()
            (work / "out" / "a").write_text("a")
            fixed = store.add_tree(store.make_path("fixed", "x"), work / "out")
        with store.exclusive("some-key"):
            store.record_output("some-key", top)
        assert store.lookup_output("some-key") == top
        store.add_root(home / "result", top)
        report["top_mode"] = oct(os.lstat(top).st_mode & 0o7777)
        report["verify"] = [r.ok for r in store.verify()]
    with Store(home / "other") as other, Store(root) as store:
        copy_path(other, store, dep)
        copy_path(other, store, top)
        report["copied"] = [p.name for p in other.paths()]
    with Store(root) as store:
        report["gc"] = [p.name for p in store.gc().deleted]
        store.remove(top)
        report["removed"] = not store.is_valid(top)
    # A build killed mid-way leaves debris the next open removes.
    pid = os.fork()
    if pid == 0:
        store = Store(root)
        def killed(out):
            tree(out)
            os.kill(os.getpid(), signal.SIGKILL)
        store.add(store.make_path("killed", "x"), killed)
    os.waitpid(pid, 0)
    report["debris"] = sorted(os.listdir(root / ".tmp"))
    Store(root).close()
    report["after"] = sorted(os.listdir(root / ".tmp"))
    print(json.dumps(report))
    """)


def test_every_store_operation_as_an_unprivileged_user(unprivileged: User) -> None:
    root = unprivileged.home / "store"
    done = unprivileged.python(OPERATIONS, root)
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["top_mode"] == "0o555"
    assert report["verify"] == [True] * 5
    assert len(report["copied"]) == 2  # top and its reference
    # Unrooted: the file, the symlink and the fixed path; the root keeps top and dep.
    assert sorted(n.split("-", 1)[1] for n in report["gc"]) == ["file", "fixed", "symlink"]
    assert report["removed"] is True
    assert len(report["debris"]) == 1 and report["debris"][0].split("~")[0].endswith("-killed")
    assert report["after"] == []
    cli = [unprivileged.venvseal("--json", *argv, "--store", root)
           for argv in (["verify"], ["gc", "--dry-run"], ["gc"])]
    assert [r.code for r in cli] == [0, 0, 0], [r.err for r in cli]
    assert cli[0].json()["checked"] == 1 and cli[0].json()["changed"] == []
    assert [Path(p).name.split("-", 1)[1] for p in cli[1].json()["deleted"]] == ["dep"]


def test_a_store_in_a_read_only_folder_is_refused(unprivileged: User) -> None:
    parent = unprivileged.home / "ro"
    parent.mkdir(mode=0o555)
    unprivileged.own(parent)
    done = unprivileged.venvseal("verify", "--store", parent / "store")
    assert done.code == 2
    assert "is not writable" in done.error and str(parent / "store") in done.error
    assert "--store DIR" in done.error


def test_read_only_commands_on_a_store_the_user_cannot_write(unprivileged: User) -> None:
    """verify and gc --dry-run read another user's store; gc itself is refused."""
    root = unprivileged.home / "roots-store"
    with Store(root) as store:
        kept = store.add(store.make_path("kept", "x"), lambda out: out.write_text("k")).path
        store.add_root(unprivileged.home / "result", kept)
        loose = store.add(store.make_path("loose", "x"), lambda out: out.write_text("l")).path
    before = sorted(os.listdir(root / ".locks"))
    verify = unprivileged.venvseal("--json", "verify", "--store", root)
    assert verify.code == 0, verify.err
    assert verify.json()["checked"] == 2 and verify.json()["changed"] == []
    dry = unprivileged.venvseal("--json", "gc", "--dry-run", "--store", root)
    assert dry.code == 0, dry.err
    assert dry.json()["deleted"] == [str(loose)]
    refused = unprivileged.venvseal("gc", "--store", root)
    assert refused.code == 2 and "is not writable" in refused.error
    assert sorted(os.listdir(root / ".locks")) == before
    assert Store(root).is_valid(loose)


def owners(root: Path) -> set[int]:
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            found.add(os.lstat(os.path.join(folder, name)).st_uid)
    return found


def test_root_writing_into_a_users_store_leaves_it_the_users(unprivileged: User) -> None:
    root = unprivileged.home / "store"
    assert unprivileged.venvseal("gc", "--store", root).code == 0  # the user makes it
    (root / ".outputs").rmdir()  # as a store made before that folder existed
    with Store(root) as store:  # root builds in it
        dep = store.add(store.make_path("dep", "x"), lambda out: out.mkdir()).path
        with store.scratch():
            store.add(store.make_path("top", "x"),
                      lambda out: write(out / "sub" / "f", "top"), references=[dep])
        with store.exclusive("a-key"):
            store.record_output("a-key", dep)
        store.add_root(unprivileged.home / "result", dep)
    assert owners(root) == {unprivileged.uid}
    # An older root-made lock file: not the user's, read-only. The user still locks it.
    stale = root / ".locks" / f"{Store(root).make_path('later', 'x').name}.lock"
    stale.write_text("")
    stale.chmod(0o644)
    assert os.lstat(stale).st_uid == 0
    done = unprivileged.python(textwrap.dedent("""
        import sys
        from pathlib import Path
        from venvseal.store.core import Store
        with Store(Path(sys.argv[1])) as store:
            store.add(store.make_path("later", "x"), lambda out: out.write_text("x"))
            with store.exclusive("a-key"):
                print(" ".join(sorted(p.name.split("-", 1)[1] for p in store.gc().deleted)))
        """), root)
    assert done.code == 0, done.err
    assert done.out.split() == ["top"]  # root's unrooted path, collected by the user


@pytest.mark.slow
def test_the_demo_builds_as_an_unprivileged_user(unprivileged: User) -> None:
    """The bundled example, built, verified, made an image, repaired and collected by a
    user."""
    user = unprivileged
    project = user.home / "demo"
    shutil.copytree(DEMO, project, ignore=shutil.ignore_patterns(
        "build", "result", "uv.lock", "__pycache__", "*.pyc"))
    user.own(project)
    made = user.run(project / "make-extras-repo", cwd=project)
    assert made.code == 0 and made.out.strip() == committed_rev(), made.err
    locked = user.run(user_uv(), "lock", "--python", "/usr/bin/python3.11", cwd=project,
                      env={"UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(user.home / "uv")})
    assert locked.code == 0, locked.err
    store, cache = user.home / "store", user.home / "uv"
    common = ("--store", store, "--uv-cache", cache)
    build = user.venvseal("--json", "build", *common, "--out-link", user.home / "result",
                          project)
    assert build.code == 0, build.err
    closure = Path(build.json()["path"])
    assert stat.S_IMODE(os.lstat(closure).st_mode) == 0o555
    assert owners(store) == {user.uid}
    verify = user.venvseal("--json", "verify", "--store", store)
    assert verify.code == 0 and verify.json()["changed"] == [], verify.err
    image = user.venvseal("--json", "image", *common, "-o", user.home / "demo.tar", project)
    assert image.code == 0, image.err
    assert (user.home / "demo.tar").stat().st_size > 1 << 20
    assert [n for n in os.listdir(user.home) if n.endswith(".tmp")] == []
    repaired = user.venvseal("--json", "repair", *common, "--force", project, closure)
    assert repaired.code == 0 and repaired.json()["repaired"] is True, repaired.err
    # The out-link keeps the closure, its references and what it was built from; the image's
    # kept layers are rooted by nothing (the next image makes them again): those go.
    kept = user.venvseal("--json", "gc", "--store", store)
    assert kept.code == 0, kept.err
    assert sorted(Path(p).name.split("-", 1)[1] for p in kept.json()["deleted"]) == [
        "app-layer", "deps-layer", "toolchain-layer"]
    freed = user.venvseal("--json", "gc", "--all-build-inputs", "--store", store)
    assert freed.code == 0, freed.err
    assert sorted(Path(p).name.split("-", 1)[1] for p in freed.json()["deleted"]) == [
        "demo-api-wheel", "demo-core-wheel", "demo-deps", "extras-wheel"]
    again = user.venvseal("--json", "build", *common, project)
    assert again.code == 0 and again.json()["reused"] is True, again.err
