"""gc: what rooted closures keep (references and build inputs), and gc racing other processes.

Every race is played with real processes on a real store: a pin (shared lock) held by one
process, a collection run by another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from support import venvseal

from venvseal.oci.cache import closure_order
from venvseal.store.core import PathInfo, Store, StorePath


def tree(text: str) -> Callable[[Path], None]:
    def produce(out: Path) -> None:
        (out / "sub").mkdir(parents=True)
        (out / "sub" / "file").write_text(text)

    return produce


def gc_in_another_process(root: Path, *extra: str) -> list[str]:
    """``venvseal gc`` run as a separate process; the basenames it deleted."""
    done = subprocess.run([sys.executable, "-m", "venvseal", "--json", "gc", "--store",
                           str(root), *extra], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return sorted(Path(p).name for p in json.loads(done.stdout)["deleted"])


def built_closure(store: Store, tmp_path: Path) -> dict[str, PathInfo]:
    """A closure as the pipeline makes one: the relinked deps as its reference; the deps
    path, a wheel and a toolchain root as its build inputs; rooted by an out-link."""
    made: dict[str, PathInfo] = {}
    made["toolchain"] = store.add(store.make_path("debian-root", "t"), tree("root"))
    made["deps"] = store.add(store.make_path("app-deps", "d"), tree("deps"))
    made["wheel"] = store.add(store.make_path("member-wheel", "w"), tree("wheel"))
    made["relinked"] = store.add(store.make_path("app-deps-relinked", "r"), tree("relinked"),
                                 build_inputs=[made["deps"].path])
    made["closure"] = store.add(
        store.make_path("app-1.0", "c"), tree("closure"), references=[made["relinked"].path],
        build_inputs=lambda: [made["deps"].path, made["wheel"].path, made["toolchain"].path])
    made["stray"] = store.add(store.make_path("stray", "s"), tree("stray"))
    store.add_root(tmp_path / "result", made["closure"].path)
    return made


def test_gc_keeps_the_build_inputs_of_rooted_closures(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        made = built_closure(store, tmp_path)
    meta = json.loads((root / ".meta" / f"{made['closure'].path.name}.json").read_text())
    assert meta["buildInputs"] == sorted(made[k].path.name
                                         for k in ("deps", "wheel", "toolchain"))
    assert Store(root).query(made["closure"].path).build_inputs == tuple(  # type: ignore[union-attr]
        sorted(made[k].path for k in ("deps", "wheel", "toolchain")))
    with Store(root) as store:
        assert store.gc(dry_run=True).deleted == (made["stray"].path,)
        assert store.gc().deleted == (made["stray"].path,)
        assert all(store.is_valid(made[k].path) for k in made if k != "stray")
        freed = store.gc(all_build_inputs=True)
        assert freed.deleted == tuple(sorted(made[k].path for k in ("deps", "wheel",
                                                                    "toolchain")))
        assert store.is_valid(made["closure"].path) and store.is_valid(made["relinked"].path)
        assert [r.ok for r in store.verify()] == [True, True]


def test_gc_all_build_inputs_on_the_command_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        made = built_closure(store, tmp_path)
    kept = venvseal("--json", "gc", "--store", root)
    assert kept.code == 0, kept.err
    assert [Path(p).name for p in kept.json()["deleted"]] == [made["stray"].path.name]
    freed = venvseal("--json", "gc", "--all-build-inputs", "--store", root)
    assert freed.code == 0, freed.err
    assert sorted(Path(p).name for p in freed.json()["deleted"]) == sorted(
        made[k].path.name for k in ("deps", "wheel", "toolchain"))


def test_gc_while_a_build_uses_a_path(tmp_path: Path) -> None:
    """A build reusing a path (the deps path) and building on it: gc in between keeps both
    the reused path and what the build adds, until the build's store is closed."""
    root = tmp_path / "store"
    with Store(root) as store:
        deps = store.add(store.make_path("app-deps", "d"), tree("deps")).path
    with Store(root) as build:
        assert build.pin(deps) is not None  # what the pipeline does when it reuses a path
        assert gc_in_another_process(root) == []

        def produce(out: Path) -> None:
            assert gc_in_another_process(root) == []  # the deps path is pinned: kept
            tree("made from " + (deps / "sub" / "file").read_text())(out)

        made = build.add(build.make_path("app-deps-relinked", "r"), produce,
                         build_inputs=[deps]).path
        assert gc_in_another_process(root) == []
        assert (made / "sub" / "file").read_text() == "made from deps"
    assert gc_in_another_process(root) == sorted([deps.name, made.name])


def test_push_pins_the_closure_it_reads(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        dep = store.add(store.make_path("dep", "d"), tree("dep")).path
        top = store.add(store.make_path("top", "t"), tree("top"), references=[dep]).path
    with Store(root) as pusher:
        assert closure_order(pusher, [top]) == [dep, top]
        assert gc_in_another_process(root) == []
        assert [r.ok for r in pusher.verify([dep, top])] == [True, True]
    assert gc_in_another_process(root) == sorted([dep.name, top.name])


def test_whole_store_verify_skips_paths_gc_removed_meanwhile(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        paths = [store.add(store.make_path(f"p{i}", "x"), tree(f"content {i}" * 1000)).path
                 for i in range(3)]
    first = sorted(paths)[0]
    collected: list[list[str]] = []

    def progress(_n: int) -> None:
        if not collected:  # hashing the first path: gc takes every other one meanwhile
            collected.append(gc_in_another_process(root))

    with Store(root) as verifier:
        results = verifier.verify(progress=progress)
    assert collected == [sorted(p.name for p in paths if p != first)]
    assert [(r.path, r.ok) for r in results] == [(first, True)]


def test_lock_files_stay_usable_by_the_owner_whoever_made_them(tmp_path: Path) -> None:
    """A lock file left by another user (root, in a user's store, before lock files were
    handed to the owner): read-only, not the owner's. Locks still work through it."""
    root = tmp_path / "store"
    with Store(root) as store:
        path = store.make_path("thing", "x")
    lock = root / ".locks" / f"{path.name}.lock"
    lock.write_text("")
    lock.chmod(0o444)
    with Store(root) as store:
        assert store.add(path, tree("x")).path == path
        with store.exclusive("some-key"):
            pass
    assert os.path.exists(lock) and store.is_valid(path)


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from venvseal.store.core import Store, StorePath
    store = Store(Path(sys.argv[1]))
    assert store.pin(StorePath(Path(sys.argv[2]))) is not None
    print("pinned", flush=True)
    sys.stdin.read()
    """)


def test_a_pin_in_another_process_keeps_a_path_from_gc(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        held = store.add(store.make_path("held", "x"), tree("held")).path
        loose = store.add(store.make_path("loose", "x"), tree("loose")).path
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(held)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "pinned\n"
        assert gc_in_another_process(root) == [loose.name]
    finally:
        holder.communicate("", timeout=30)
    assert gc_in_another_process(root) == [held.name]
    assert StorePath(held) not in Store(root).paths()


def test_verify_leaves_no_pin_behind(tmp_path: Path) -> None:
    """verify pins each path while hashing it; once it returns, gc in the same process
    (the CLI run in-process, as tests and embedders do) may collect them."""
    root = tmp_path / "store"
    with Store(root) as store:
        loose = store.add(store.make_path("loose", "x"), tree("loose")).path
    checked = venvseal("--json", "verify", "--store", root)
    assert checked.code == 0 and checked.json()["checked"] == 1, checked.err
    Store(root).verify()  # a store dropped without close() releases its pins too
    collected = venvseal("--json", "gc", "--store", root)
    assert collected.code == 0, collected.err
    assert collected.json()["deleted"] == [str(loose)]
