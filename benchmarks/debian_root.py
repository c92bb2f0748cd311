"""Benchmark: making a Debian root with debootstrap, with mmdebstrap, and from a pinned lock.

In one run, alternating, for one spec (default: Debian 12 minbase with python3-minimal):
    debootstrap   today's mirror, as unpinned roots are made (twice: are the two the same?)
    mmdebstrap    today's mirror, what `venvseal toolchain --lock` runs once to pin a root
    pinned        mmdebstrap from the pinned .debs already in the store (every later root)
Medians of wall time, each as a ratio of debootstrap, and whether two roots made the same
way have one NAR hash (device nodes, logs and apt's lists pruned as venvseal does).

Needs root and the network. Usage: .venv/bin/python benchmarks/debian_root.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from venvseal.recipe.model import DebianSpec
from venvseal.store.core import Store
from venvseal.store.nar import nar_hash
from venvseal.toolchain import debian, debroot


def timed(make: Callable[[Path], None], work: Path, name: str) -> tuple[float, str]:
    out = work / name
    start = time.monotonic()
    make(out)
    seconds = time.monotonic() - start
    debian.prune(out)
    return seconds, nar_hash(out).hash.sri


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--suite", default="bookworm")
    args = parser.parse_args()
    spec = DebianSpec(suite=args.suite, packages=("python3-minimal",))
    mirror = debian.apt_mirror()
    times: dict[str, list[float]] = {"debootstrap": [], "mmdebstrap": [], "pinned": []}
    hashes: dict[str, set[str]] = {k: set() for k in times}
    with tempfile.TemporaryDirectory(prefix="venvseal-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        with Store(work / "store") as store:
            pin, debs = debroot.lock(spec, mirror=mirror, work=_fresh(work / "lock"),
                                     on_step=lambda _m: None)
            local = debroot.realise_debs(pin, store, mirror=mirror, local=debs)
            for i in range(args.runs):
                makers: dict[str, Callable[[Path], None]] = {
                    "debootstrap": lambda out: debian.debootstrap(spec, out, mirror=mirror),
                    "mmdebstrap": lambda out: debian.mmdebstrap(spec, out, mirror, hooks=[]),
                    "pinned": lambda out: _pinned(spec, pin, Path(local), out),
                }
                for name, make in makers.items():
                    seconds, sri = timed(make, _fresh(work / f"{name}-{i}"), "root")
                    times[name].append(seconds)
                    hashes[name].add(sri)
                    print(f"{name} run {i + 1}: {seconds:.1f} s {sri}", file=sys.stderr)
    base = statistics.median(times["debootstrap"])
    print(f"| way | median of {args.runs} | vs debootstrap | one NAR hash |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        same = "yes" if len(hashes[name]) == 1 else f"no ({len(hashes[name])} hashes)"
        print(f"| {name} | {median:.1f} s | {median / base:.2f}x | {same} |")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    return 0


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _pinned(spec: DebianSpec, pin: debroot.DebianPin, debs: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="venvseal-repo-") as repo:
        debian.mmdebstrap(spec, out, debroot._local_repo(pin, debs, Path(repo)), hooks=[])


if __name__ == "__main__":
    sys.exit(main())
