"""Benchmark: the deps stage against bare ``uv sync --frozen`` in the same run.

What it measures
    cold   fresh uv cache for every run: bare uv sync vs ``venvseal deps`` (fresh store)
    warm   one pre-warmed uv cache: bare uv sync into a fresh venv vs ``venvseal deps`` into a
           fresh store (so the stage really runs: lock check, sync, normalise, hash, store)
    no-op  ``venvseal deps`` again on a store that has the result: the inputs are unchanged,
           so nothing runs but reading the inputs and the store
"Bare uv sync" is ``uv sync --frozen --no-install-project --no-install-workspace --no-dev``
with the same uv binary, toolchain python and environment, run through the same bubblewrap
root (a Debian sid root's python cannot run on the host without it), and nothing else.
Each round runs every side once, in an order rotated from round to round, each run after a
flush of the file system (outside the timing), so machine load drifts onto all alike and no
side pays for another's writeback; medians and ratios are reported.

Targets (issue 3): overhead over bare uv sync at most 15% cold and warm; no-op under 0.5 s.

Usage: .venv/bin/python benchmarks/deps_stage.py [--project DIR] [--runs N] [--cold-runs N]
       (default project: examples/demo; its uv.lock is made if missing)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from venvseal import fsutil, pipeline
from venvseal.deps import stage as deps
from venvseal.deps.stage import Network
from venvseal.recipe import files
from venvseal.recipe import model as recipe
from venvseal.store.core import Store, copy_path
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain import sandbox
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

REPO = Path(__file__).resolve().parent.parent
# Where a Debian toolchain root is made once and copied from (outside the timings).
TOOLCHAIN_STORE = Path("/var/tmp/venvseal-bench/toolchains")
VENVSEAL = REPO / ".venv" / "bin" / "venvseal"
NETWORK = Network(resolv_conf=Path("/etc/resolv.conf"),
                  ca_file=Path(os.environ.get("SSL_CERT_FILE",
                                              "/etc/ssl/certs/ca-certificates.crt")))


def resolve(project: Path) -> tuple[recipe.Recipe, toolchain.ResolvedToolchain]:
    """The recipe and its toolchain (a Debian root is made in, or reused from, STORE)."""
    rec = files.load_recipe(project)
    with Store(TOOLCHAIN_STORE) as store:
        ctx = pipeline.Context(store=store, sandbox=Sandbox.locate(), uv_cache=Path("/"),
                               network=NETWORK)
        return rec, pipeline.resolve_toolchain(rec, ctx)


def prepare(project: Path, work: Path) -> Path:
    """A writable copy of ``project`` with a uv.lock; returns its folder."""
    copy = work / "project"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".venv", "result*"))
    for p in copy.rglob("*"):
        os.chmod(p, os.stat(p).st_mode | 0o200)
    if not (copy / "uv.lock").exists():
        rec, tc = resolve(copy)
        spec = _spec(rec, tc, copy, None, None, writable_src=True)
        Sandbox.locate().run(spec, ["uv", "lock", "--python", str(tc.python)], what="uv lock")
    return copy


def _spec(rec: recipe.Recipe, tc: toolchain.ResolvedToolchain, src: Path, out: Path | None,
          cache: Path | None, *, writable_src: bool = False) -> SandboxSpec:
    inputs = deps.DepsInputs(recipe=rec, lock=None, toolchain=tc, files=())  # type: ignore[arg-type]
    env = deps._uv_env(inputs, NETWORK, PurePosixPath())  # the stage's own environment
    mounts = [Mount(host=src, target=sandbox.SRC_DIR, writable=writable_src),
              Mount(host=toolchain.uv_binary(), target=sandbox.TOOLS_DIR / "uv"),
              Mount(host=NETWORK.ca_file, target=sandbox.CA_FILE)]  # type: ignore[arg-type]
    if out is not None:
        mounts.append(Mount(host=out, target=sandbox.OUT_DIR, writable=True))
    if cache is not None:
        mounts.append(Mount(host=cache, target=sandbox.CACHE_DIR, writable=True))
    else:
        env["UV_CACHE_DIR"] = str(sandbox.TMP_DIR / "cache")
    return SandboxSpec(root=tc.root, mounts=tuple(mounts), env=env, network=True,
                       cwd=sandbox.SRC_DIR, resolv_conf=NETWORK.resolv_conf)


def bare_sync(project: Path, cache: Path, scratch: Path) -> float:
    rec, tc = resolve(project)
    out = Path(tempfile.mkdtemp(dir=scratch))
    cache.mkdir(parents=True, exist_ok=True)
    argv = ["uv", "sync", "--frozen", "--no-install-project", "--no-install-workspace",
            "--no-dev", "--python", str(tc.python)]
    start = time.perf_counter()
    Sandbox.locate().run(_spec(rec, tc, project, out, cache), argv, what="bare uv sync")
    took = time.perf_counter() - start
    shutil.rmtree(out)
    return took


# `venvseal -v` logs how long each command took; these are uv's in the deps stage.
UV_STEP = re.compile(r"^(?:uv sync|installing build backends)[^\n]*: exit \d+ after ([\d.]+) s$",
                     re.MULTILINE)


def venvseal_deps(project: Path, cache: Path, store: Path,
                  command: tuple[str, ...] = (str(VENVSEAL),),
                  own: list[float] | None = None) -> float:
    """Seconds ``venvseal deps`` took; with ``own``, venvseal's own work in it (the whole
    minus its uv steps, from its -v log) is appended there."""
    if TOOLCHAIN_STORE.exists():
        rec, tc = resolve(project)
        if rec.toolchain.debian is not None:  # the root is made once, outside the timing
            with Store(TOOLCHAIN_STORE) as source, Store(store) as target:
                copy_path(target, source, tc.root)  # type: ignore[arg-type]
    # As installed: with its bytecode (the first, untimed run writes any that is missing).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    done = subprocess.run([*command, "-v", "--store", str(store), "deps", "--update-hash",
                           "--uv-cache", str(cache), str(project)], check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    took = time.perf_counter() - start
    if own is not None and (steps := UV_STEP.findall(done.stderr)):  # an older one logs none
        own.append(took - sum(map(float, steps)))
    return took


def remove(path: Path) -> None:
    if path.exists():
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
        shutil.rmtree(path)


def settle(work: Path) -> None:
    """Flush the file system before a timed run, outside the timing, so that no run pays
    for the writeback and journal commits of the one before it (bare uv sync's venv is
    deleted before writeback, venvseal's is flushed by its publish: on this machine's disk
    whichever run came right after bare paid ~1 s more, whichever side that was)."""
    fsutil.sync_filesystem(work)


@dataclass(frozen=True)
class Sides:
    """Times of each side, bare first; and for each venvseal side, its own work per run."""

    times: list[list[float]]
    own: list[list[float]]


def pairs(n: int, project: Path, work: Path, *, cold: bool,
          ours: tuple[str, ...] = (str(VENVSEAL),),
          baseline: tuple[str, ...] | None = None) -> Sides:
    """Bare, venvseal (and the baseline venvseal, if given) times, ``n`` rounds. Each round
    runs every side once, in an order rotated from round to round (no side always follows
    the same one), each after :func:`settle`."""
    commands = [ours, baseline] if baseline else [ours]
    sides = Sides([[] for _ in range(1 + len(commands))], [[] for _ in commands])
    warm_cache = work / "warm-cache"
    for i in range(n):
        caches = [work / f"cache-{side}-{i}" if cold else warm_cache
                  for side in range(len(sides.times))]
        store = work / f"store-{'c' if cold else 'w'}{i}"
        for side in (i + k for k in range(len(sides.times))):
            side %= len(sides.times)
            settle(work)
            if side == 0:
                sides.times[0].append(bare_sync(project, caches[0], work))
            else:
                sides.times[side].append(venvseal_deps(project, caches[side], store,
                                                       commands[side - 1],
                                                       own=sides.own[side - 1]))
                remove(store)
        for cache in caches if cold else ():
            remove(cache)
    return sides


def overheads(sides: Sides) -> list[str]:
    """Per venvseal side: its median, the overhead of the medians and (in brackets) the
    median of each round's ratio, and its own work (median) as a share of bare's median."""
    mb = statistics.median(sides.times[0])
    cells = []
    for times, own in zip(sides.times[1:], sides.own, strict=True):
        m = statistics.median(times)
        paired = statistics.median(t / b for t, b in zip(times, sides.times[0], strict=True))
        work = f"{statistics.median(own):.2f} s = {100 * statistics.median(own) / mb:.0f}%" \
            if own else "-"
        cells.append(f"{m:.2f} s | {100 * (m / mb - 1):+.0f}% ({100 * (paired - 1):+.0f}%) | "
                     f"{work} |")
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=REPO / "examples" / "demo")
    ap.add_argument("--runs", type=int, default=3, help="warm pairs and no-op runs")
    ap.add_argument("--cold-runs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/venvseal-bench/deps"))
    ap.add_argument("--baseline", type=shlex.split, default=None, metavar="COMMAND",
                    help="another venvseal (e.g. 'env PYTHONPATH=OLD/src .venv/bin/venvseal') "
                         "timed in the same pairs, as a before/after baseline")
    ap.add_argument("--venvseal", type=shlex.split, default=[str(VENVSEAL)], metavar="COMMAND",
                    help="the venvseal to time (default: this checkout's)")
    args = ap.parse_args()
    baseline = tuple(args.baseline) if args.baseline else None
    ours = tuple(args.venvseal)
    remove(args.work)
    args.work.mkdir(parents=True)
    project = prepare(args.project.resolve(), args.work)
    cold = pairs(args.cold_runs, project, args.work, cold=True, ours=ours, baseline=baseline)
    # Fill the warm cache: the bare uv's, and venvseal's (its builds are kept per toolchain,
    # in a folder of the same cache; see src/venvseal/deps/uvcache.py).
    bare_sync(project, args.work / "warm-cache", args.work)
    for command in (ours, baseline) if baseline else (ours,):
        venvseal_deps(project, args.work / "warm-cache", args.work / "store-fill", command)
        remove(args.work / "store-fill")
    warm = pairs(args.runs, project, args.work, cold=False, ours=ours, baseline=baseline)
    store = args.work / "store-noop"
    venvseal_deps(project, args.work / "warm-cache", store, ours)
    noop = [venvseal_deps(project, args.work / "warm-cache", store, ours)
            for _ in range(args.runs)]
    print(f"project: {args.project.name}; {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    # Overheads: of the medians, and (in brackets) the median of each round's own ratio,
    # which load drifting over the whole benchmark disturbs less; and venvseal's own work
    # (the run minus its uv steps), which the disk's swings between runs do not reach.
    extra = " baseline (median) | overhead | its own work |" if baseline else ""
    print(f"\n| deps stage | bare uv sync (median) | venvseal deps (median) | overhead | "
          f"its own work (median) |{extra}")
    print("|---|---|---|---|---|" + ("---|---|---|" if baseline else ""))
    for label, sides in (("cold", cold), ("warm", warm)):
        if not sides.times[0]:  # --cold-runs 0
            continue
        mb = statistics.median(sides.times[0])
        print(f"| {label} ({len(sides.times[0])} runs each) | {mb:.2f} s | "
              + " ".join(overheads(sides)))
        print(f"{label} runs (bare; venvseal; baseline): "
              + "; ".join(" ".join(f"{t:.2f}" for t in side) for side in sides.times)
              + "; own work: " + "; ".join(" ".join(f"{t:.2f}" for t in side)
                                           for side in sides.own), file=sys.stderr)
    med = statistics.median(noop)
    print(f"| no-op ({len(noop)} runs) | - | {med:.3f} s | target < 0.5 s |")
    remove(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
