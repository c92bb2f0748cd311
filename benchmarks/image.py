"""Benchmark: images after an app edit, and bytecode on every core (issue 16).

Three parts, each against a baseline measured in the same run (medians, and ratios):

demo      `venvseal image` of examples/demo: the first one (a fresh store, warm uv cache:
          the build, the runtime closure, every layer) vs `image` after one app file is
          edited (the closure is assembled again; only its app layer is written). Target:
          at most 0.2x.
synthetic an app with ~1 GB of dependencies (a fake relinked deps store path of random and
          text files, built without uv the way tests/support/image.py does): the first
          image (every layer compressed) vs the image after an app edit (the kept layers
          reused), both in process: the blobs alone (what push sends), with the archive
          file written over the earlier one (its kept prefix reused), written whole to a
          new file (its blobs copied), and with a layout folder written (its blobs
          hard-linked). Target: under 2%.
push      `venvseal push` of examples/demo to a local docker-registry: an app edit to a
          pushed image, end to end (build with its checks, image, push), next to the first
          push; nix2container's 1.8 s is the reference figure.
bytecode  the relinked deps' compiler (venvseal.assemble.relinked, in the sandbox, a worker
          per core) vs `python -m compileall -j0` of the same tree (a real site-packages:
          the demo's relinked deps). Target: at most 1.1x.

Usage: .venv/bin/python benchmarks/image.py [--runs N] [--deps-mib N] [--skip demo,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath

from build import prepare, venvseal
from deps_stage import remove

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.image import edited_closure, stored_fake_build  # noqa: E402

from venvseal.assemble.relinked import compile_bytecode  # noqa: E402
from venvseal.oci.image import build_blobs, build_image  # noqa: E402
from venvseal.store.core import Store  # noqa: E402
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec, fixed_env  # noqa: E402

PYTHON = "/usr/bin/python3"
Row = tuple[str, list[float], str]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def table(title: str, rows: list[Row]) -> None:
    """Rows after the first are compared with the first (the baseline)."""
    base = statistics.median(rows[0][1])
    print(f"\n| {title} | runs | median | vs first row | target |")
    print("|---|---|---|---|---|")
    for label, times, goal in rows:
        med = statistics.median(times)
        print(f"| {label} | {len(times)} | {med:.3f} s | {med / base:.3f} | {goal} |")


def demo(work: Path, runs: int) -> list[Row]:
    project = prepare(REPO / "examples" / "demo", work)
    cache = work / "uv-cache"

    def image(store: Path, out: str) -> float:
        return venvseal("--store", store, "image", "--uv-cache", cache, project,
                        "-o", work / out)

    image(work / "warmup", "warmup.tar")  # fills the uv cache
    remove(work / "warmup")
    first = []
    for i in range(max(2, runs // 2)):
        first.append(image(work / f"first-{i}", "first.tar"))
        remove(work / f"first-{i}")
    store = work / "store"
    image(store, "app.tar")  # as a user does: every image to the same file
    noop = [image(store, "app.tar") for _ in range(runs)]
    edits = []
    target = project / "demo" / "settings.py"
    for i in range(runs):
        with target.open("a", encoding="utf-8") as f:
            f.write(f"# edit {i}\n")
        edits.append(image(store, "app.tar"))
    return [("first image (fresh store: build + every layer)", first, "-"),
            ("image, nothing changed", noop, "-"),
            ("image after an app edit (assembly + app layer)", edits, "<= 0.2x")]


def push(work: Path, runs: int) -> list[Row]:
    """`venvseal push` of the demo to a local docker-registry: the first push (build + every
    blob uploaded) vs an app edit to a pushed image (build with its checks, image, push of
    the app layer, config and manifest)."""
    from support.registry import registry_server

    project = prepare(REPO / "examples" / "demo", work)
    cache, store = work / "uv-cache", work / "store"
    with registry_server(work / "registry") as server:
        def pushed(ref: str) -> float:
            return venvseal("--store", store, "push", "--uv-cache", cache, project,
                            f"{server.host}/{ref}")

        first = [pushed("demo:first")]
        edits = []
        for i in range(runs):
            with (project / "demo" / "settings.py").open("a", encoding="utf-8") as f:
                f.write(f"# edit {i}\n")
            edits.append(pushed(f"demo:edit-{i}"))
    return [("first push (fresh store, cold uv cache: build + every blob)", first, "-"),
            ("app edit to a pushed image (build, image, push)", edits,
             "reference: nix2container 1.8 s")]


def write_deps(root: Path, mib: int) -> dict[str, bytes]:
    """~``mib`` MiB of files: half random (incompressible), half text (compressible)."""
    files: dict[str, bytes] = {}
    text = b"".join(b"def function_%d(x):\n    return x * %d  # a comment\n" % (i, i)
                    for i in range(20_000))
    for i in range(mib):
        data = os.urandom(1 << 20) if i % 2 else text[: 1 << 20]
        files[f"lib/python3.11/site-packages/pkg{i // 50}/mod{i}.bin"] = data
    return files


def synthetic(work: Path, runs: int, mib: int) -> list[Row]:
    first, edits, whole, blobs, layouts, archive_only = [], [], [], [], [], []
    for i in range(max(2, runs // 2)):
        with Store(work / f"store-{i}") as store:
            config, paths, runtime = stored_fake_build(work / f"tree-{i}", store,
                                                       deps_files=write_deps(work, mib))
            first.append(timed(partial(build_image, config, paths, runtime,
                                       work / "app.tar", store=store)))
            for j in range(runs if i == 0 else 0):
                edited = edited_closure(store, paths, work, f"{j + 4}" * 32 + f"-x-1.{j}")
                # The edited image over the earlier one (its prefix kept), as a user does.
                edits.append(timed(partial(build_image, config, edited, runtime,
                                           work / "app.tar", store=store)))
                whole.append(timed(partial(build_image, config, edited, runtime,
                                           work / f"whole-{j}.tar", store=store)))
                os.unlink(work / f"whole-{j}.tar")
                blobs.append(timed(partial(build_blobs, config, edited, runtime, work,
                                           store=store)))
                (work / "layout").mkdir(exist_ok=True)
                layouts.append(timed(partial(build_image, config, edited, runtime,
                                             work / "layout", store=store)))
            archive_only.append(timed(partial(shutil.copyfile, work / "app.tar",
                                              work / "copy.tar")))
        remove(work / f"store-{i}")
        remove(work / f"tree-{i}")
    size = (work / "app.tar").stat().st_size
    return [(f"first image ({mib} MiB deps, archive {size / 2**20:.0f} MiB)", first, "-"),
            ("image after an app edit: blobs, archive written over the earlier one", edits,
             "< 2%"),
            ("image after an app edit: blobs, archive written whole (a new file)", whole,
             "-"),
            ("image after an app edit: blobs (what push sends)", blobs, "< 2%"),
            ("image after an app edit: blobs, layout folder written", layouts, "< 2%"),
            ("copying the archive file alone (reference)", archive_only, "-")]


def bytecode(work: Path, runs: int, source: Path) -> list[Row]:
    trees = [work / "bytecode-a", work / "bytecode-b"]
    ours, theirs = [], []
    for i in range(runs):
        for tree in trees:
            remove(tree)
            shutil.copytree(source, tree, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        logical = PurePosixPath("/venvseal-build/site")
        spec = SandboxSpec(root=Path("/"), env=fixed_env((PurePosixPath("/usr/bin"),)),
                           mounts=(Mount(host=trees[0], target=logical, writable=True),))
        run_ours = partial(compile_bytecode, [logical], python=PurePosixPath(PYTHON),
                           what="bench", runner=Sandbox.locate(), spec=spec)
        run_theirs = partial(subprocess.run, [
            PYTHON, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "checked-hash",
            str(trees[1])], check=True, stdout=subprocess.DEVNULL)
        pair: list[tuple[list[float], Callable[[], object]]] = [(ours, run_ours),
                                                                 (theirs, run_theirs)]
        for times, run in pair if i % 2 == 0 else reversed(pair):
            times.append(timed(run))
    modules = sum(1 for _ in trees[0].rglob("*.py"))
    return [(f"python -m compileall -j0 ({modules} modules)", theirs, "-"),
            ("venvseal relinked compile (sandbox, -j cores)", ours, "<= 1.1x")]


def demo_site_packages(work: Path) -> Path | None:
    """The demo's relinked deps site-packages, left by the demo part, if it ran."""
    found = sorted((work / "demo" / "store").glob("*-deps-relinked/lib/python*/site-packages"))
    return found[0] if found else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--deps-mib", type=int, default=1024)
    ap.add_argument("--skip", default="",
                    help="comma-separated: demo, push, synthetic, bytecode")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/venvseal-bench/image"))
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    remove(args.work)
    args.work.mkdir(parents=True)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the start")
    start = time.perf_counter()
    if "demo" not in skip:
        (args.work / "demo").mkdir()
        table("venvseal image, examples/demo", demo(args.work / "demo", args.runs))
    if "push" not in skip:
        (args.work / "push").mkdir()
        table("venvseal push, examples/demo, local docker-registry",
              push(args.work / "push", args.runs))
    if "synthetic" not in skip:
        (args.work / "synthetic").mkdir()
        table("image of a ~1 GB-deps app (in process)",
              synthetic(args.work / "synthetic", args.runs, args.deps_mib))
    if "bytecode" not in skip:
        source = demo_site_packages(args.work)
        if source is None:  # without the demo: this interpreter's own packages
            source = Path(next(p for p in sys.path if p.endswith("site-packages")))
        table("bytecode of a relinked deps tree", bytecode(args.work, args.runs, source))
    print(f"\n{time.perf_counter() - start:.0f} s in all; load {os.getloadavg()[0]:.2f} "
          "at the end")
    remove(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
