"""Reliability: builds killed at random moments, and parallel builds, never damage the store.

Seeded and reproducible: VENVSEAL_CRASH_SEED picks the kill moments (default 20261122) and
VENVSEAL_CRASH_TRIALS how many (default 20). Each trial builds a small app into a fresh store
(deps stage with uv, offline assembly, verify), sends SIGKILL to venvseal after a random
delay that falls anywhere from start-up to the end of the build, then checks that the store
holds no partial path, and that the next build cleans the debris and gives the same result.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import venvseal
from support.apps import add_assembly, make_app

from venvseal.store.core import Store
from venvseal.store.nar import nar_hash

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("VENVSEAL_CRASH_SEED", "20261122"))
TRIALS = int(os.environ.get("VENVSEAL_CRASH_TRIALS", "20"))



@dataclass(frozen=True)
class App:
    project: Path
    cache: Path
    closure: str  # store path name of the closure
    nar: str  # its NAR hash
    seconds: float  # one full build into a fresh store, warm uv cache


def build_process(project: Path, store: Path, cache: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "venvseal", "--json", "-v", "--store", str(store), "build",
         "--uv-cache", str(cache), *extra, str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def make(root: Path, cache: Path, name: str) -> App:
    project = add_assembly(make_app(root / name, cache, name=name), name)
    first = venvseal("--json", "--store", root / "ref-store", "build", "--update-hash",
                     "--uv-cache", cache, project)
    assert first.code == 0, first.err
    start = time.perf_counter()
    again = venvseal("--json", "--store", root / "timing-store", "build", "--uv-cache", cache,
                     project)
    seconds = time.perf_counter() - start
    assert again.code == 0, again.err
    path = Path(again.json()["path"])
    return App(project, cache, path.name, nar_hash(path).hash.sri, seconds)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    root = tmp_path_factory.mktemp("reliability")
    return make(root, root / "uv-cache", "crashy")


def assert_no_partial_path(root: Path) -> None:
    """Every store entry is complete: it has its meta and its content has the recorded hash."""
    meta = root / ".meta"
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        record = meta / f"{entry.name}.json"
        assert record.exists(), f"partial path without meta: {entry.name}"
        recorded = json.loads(record.read_text())["narHash"]
        assert nar_hash(entry).hash.sri == recorded, f"partial or damaged path: {entry.name}"


def test_sigkill_at_random_moments_never_leaves_a_partial_path(app: App,
                                                               tmp_path: Path) -> None:
    rng = random.Random(SEED)
    survived, debris_seen = 0, 0
    for trial in range(TRIALS):
        store = tmp_path / f"store-{trial}"
        delay = rng.uniform(0.05, app.seconds * 1.1)
        proc = build_process(app.project, store, app.cache)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        time.sleep(0.2)  # the sandbox's processes die with their parent
        if store.exists():
            assert_no_partial_path(store)
            debris_seen += len(os.listdir(store / ".tmp")) if (store / ".tmp").exists() else 0
        done = build_process(app.project, store, app.cache)
        out, err = done.communicate(timeout=600)
        assert done.returncode == 0, f"trial {trial} (killed after {delay:.2f} s): {err[-2000:]}"
        path = Path(json.loads(out)["path"])
        assert path.name == app.closure and nar_hash(path).hash.sri == app.nar
        assert os.listdir(store / ".tmp") == [], "debris left after the next build"
        assert_no_partial_path(store)
        survived += 1
    print(f"\ncrash trials: {TRIALS} (seed {SEED}), survived {survived}, killed builds left "
          f"debris in .tmp {debris_seen} times, all cleaned by the next build")
    assert survived == TRIALS


def sandbox_commands(stderr: str, needle: str) -> int:
    return sum(1 for line in stderr.splitlines() if line.startswith("$ ") and needle in line)


def test_four_parallel_builds_of_one_recipe_do_the_work_once(app: App, tmp_path: Path) -> None:
    store = tmp_path / "shared-store"
    procs = [build_process(app.project, store, app.cache) for _ in range(4)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-1500:] for _, e in results]
    paths = {json.loads(out)["path"] for out, _ in results}
    assert len(paths) == 1 and Path(paths.pop()).name == app.closure
    syncs = sum(sandbox_commands(err, "uv sync --locked") for _, err in results)
    assemblies = sum(sandbox_commands(err, "pip install --no-deps") for _, err in results)
    assert syncs == 1, f"uv sync ran {syncs} times"
    assert assemblies == 1, f"the member was installed {assemblies} times"
    assert_no_partial_path(store)
    with Store(store) as s:
        assert [r.ok for r in s.verify()] == [True] * len(s.paths())


def test_two_recipes_build_in_parallel_without_waiting(app: App, tmp_path: Path) -> None:
    other = make(tmp_path, app.cache, "other")
    store = tmp_path / "store"
    first = build_process(app.project, store, app.cache)
    second = build_process(other.project, store, app.cache)
    (o1, e1), (o2, e2) = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (e1[-1500:], e2[-1500:])
    assert "waiting for" not in e1 + e2  # neither waited for the other's lock
    assert Path(json.loads(o1)["path"]).name == app.closure
    assert Path(json.loads(o2)["path"]).name == other.closure


def test_a_flipped_byte_is_named_refused_and_repaired(app: App, tmp_path: Path) -> None:
    store = tmp_path / "store"
    built = venvseal("--json", "--store", store, "build", "--uv-cache", app.cache, app.project)
    assert built.code == 0, built.err
    closure = Path(built.json()["path"])
    victim = closure / "lib" / "python3.11" / "site-packages" / "crashy" / "__init__.py"
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    victim.write_bytes(bytes(data))

    check = venvseal("--store", store, "verify")
    assert check.code == 1
    assert f"changed: {closure}" in check.out
    assert "lib/python3.11/site-packages/crashy/__init__.py" in check.out
    assert "venvseal repair" in check.out

    refused = venvseal("--store", store, "build", "--uv-cache", app.cache, app.project)
    assert refused.code == 1 and "Traceback" not in refused.err
    assert f"store path {closure} was modified" in refused.error
    assert "crashy/__init__.py" in refused.error and "venvseal repair" in refused.error

    repaired = venvseal("--store", store, "repair", app.project, closure, "--uv-cache",
                        app.cache)
    assert repaired.code == 0, repaired.err
    assert venvseal("--store", store, "verify").code == 0
    again = venvseal("--json", "--store", store, "build", "--uv-cache", app.cache, app.project)
    assert again.code == 0 and again.json()["reused"] is True
    assert nar_hash(closure).hash.sri == app.nar
