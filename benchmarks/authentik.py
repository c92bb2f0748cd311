"""Benchmark: the flagship, authentik's dependency set on Python 3.14 from Debian sid.

Prints one Markdown table (for the README) of, in one run:
- the deps stage against bare ``uv sync --frozen`` in the same sid root, cold (empty uv
  caches) and warm (one warm cache), as medians and the overhead ratio (see deps_stage.py);
- ``venvseal build`` with nothing changed (no-op) and after editing one app file;
- NAR hashing of the relinked deps (nearly all of the bytes), venvseal against
  ``nix-hash --type sha256``;
- reference scanning of the relinked deps (what the deps stage's strip does on every file);
- auto-patchelf: planning and applying RUNPATHs for every ELF file, on a copy of the deps;
- the sizes and entry counts of the relinked deps and of the closure;
- peak memory (max RSS) of the venvseal process itself, for a full build and a no-op.

Usage: .venv/bin/python benchmarks/authentik.py [--cold-runs N] [--runs N] [--work DIR]
       [--deps-only] [--baseline COMMAND] [--toolchain-store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deps_stage

from venvseal import fsutil
from venvseal.elf import patchelf as elf
from venvseal.elf import refs
from venvseal.elf.buildid import find_elf_files
from venvseal.elf.tool import locate_patchelf
from venvseal.store.core import Store
from venvseal.store.nar import nar_hash

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO.parent / "shared" / "fixtures" / "authentik-deps"
PEAK_RSS = ("import resource, sys\nfrom venvseal.cli.main import main\ncode = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)\n")


def venvseal(*argv: str | Path) -> tuple[float, float, str]:
    """Wall seconds, the venvseal process's own peak RSS in MB, and stdout."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *map(str, argv)],
                          capture_output=True, text=True, check=True)
    took = time.perf_counter() - start
    return took, int(done.stderr.strip().splitlines()[-1]) / 1024, done.stdout.strip()


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def prepare(work: Path) -> Path:
    project = work / "authentik"
    subprocess.run([str(REPO / "examples" / "authentik" / "prepare"), str(project),
                    str(FIXTURE)], check=True)
    return deps_stage.prepare(project, work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold-runs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/venvseal-bench/authentik"))
    ap.add_argument("--deps-only", action="store_true", help="only the deps stage's rows")
    ap.add_argument("--baseline", type=shlex.split, default=None, metavar="COMMAND",
                    help="another venvseal timed in the same deps-stage pairs (deps_stage.py)")
    ap.add_argument("--venvseal", type=shlex.split, default=[str(deps_stage.VENVSEAL)],
                    metavar="COMMAND", help="the venvseal timed in the deps-stage pairs")
    ap.add_argument("--toolchain-store", type=Path, default=deps_stage.TOOLCHAIN_STORE,
                    help="a store with (or to make) the sid root, e.g. the tests' cache "
                         "/var/cache/venvseal-tests/store")
    args = ap.parse_args()
    deps_stage.TOOLCHAIN_STORE = args.toolchain_store
    baseline = tuple(args.baseline) if args.baseline else None
    ours = tuple(args.venvseal)
    deps_stage.remove(args.work)
    args.work.mkdir(parents=True)
    project = prepare(args.work)
    rows: list[tuple[str, str, str, str]] = []

    cold = deps_stage.pairs(args.cold_runs, project, args.work, cold=True, ours=ours,
                            baseline=baseline)
    # Both warm sides start warm: venvseal's builds are kept per toolchain (uvcache.py).
    if args.runs:
        deps_stage.bare_sync(project, args.work / "warm-cache", args.work)
        for command in (ours, baseline) if baseline else (ours,):
            deps_stage.venvseal_deps(project, args.work / "warm-cache",
                                     args.work / "store-fill", command)
            deps_stage.remove(args.work / "store-fill")
    warm = deps_stage.pairs(args.runs, project, args.work, cold=False, ours=ours,
                            baseline=baseline)
    for label, sides in (("cold", cold), ("warm", warm)):
        if not sides.times[0]:
            continue
        print(f"{label} runs (bare; venvseal; baseline): "
              + "; ".join(" ".join(f"{t:.1f}" for t in side) for side in sides.times)
              + "; own work: " + "; ".join(" ".join(f"{t:.2f}" for t in side)
                                           for side in sides.own), file=sys.stderr)
        mb = statistics.median(sides.times[0])
        for name, cell in zip(("", " baseline"), deps_stage.overheads(sides), strict=False):
            m, overhead, own, _ = (c.strip() for c in cell.split("|"))
            rows.append((f"deps stage{name}, {label} ({len(sides.own[0])} pairs)", m,
                         f"bare uv sync {mb:.1f} s",
                         f"{overhead}, own work {own} (target +15%)"))
    if args.deps_only:
        return report(rows, args.work)

    store, cache = args.work / "store", args.work / "warm-cache"
    deps_stage.venvseal_deps(project, cache, store)  # seeds the toolchain, builds the deps
    full, full_rss, out = venvseal("--store", store, "--json", "build", "--uv-cache", cache,
                                   project)
    closure, relinked = (Path(json.loads(out)[key]) for key in ("path", "relinked"))
    noop = [venvseal("--store", store, "build", "--uv-cache", cache, project) for _ in
            range(args.runs)]
    edits = []
    for i in range(args.runs):
        with (project / "authentik" / "root" / "settings.py").open("a") as f:
            f.write(f"# edit {i}\n")
        edits.append(venvseal("--store", store, "build", "--uv-cache", cache, project)[0])
    rows.append(("build, relinked deps and assembly (deps reused)", f"{full:.1f} s", "-", "-"))
    noop_median = statistics.median(t for t, _, _ in noop)
    rows.append((f"build, no-op ({len(noop)} runs)", f"{noop_median:.3f} s", "-",
                 "target < 0.5 s"))
    rows.append((f"build after one app-file edit ({len(edits)} runs)",
                 f"{statistics.median(edits):.2f} s", "-", "target < 5 s"))

    # The relinked deps hold nearly all of the bytes (the closure links to them).
    ours = [timed(nar_hash, relinked) for _ in range(args.runs)]
    theirs = [timed(subprocess.run, ["nix-hash", "--type", "sha256", str(relinked)])
              for _ in range(args.runs)]
    mo, mt = statistics.median(ours), statistics.median(theirs)
    rows.append(("NAR hash of the relinked deps", f"{mo:.2f} s", f"nix-hash {mt:.2f} s",
                 f"{mo / mt:.2f}x (target 1.0x)"))
    scans = [timed(refs.scan, relinked) for _ in range(args.runs)]
    rows.append(("reference scan of the relinked deps", f"{statistics.median(scans):.2f} s",
                 "-", "-"))

    copy = args.work / "patchelf-copy"
    deps = next(p for p in Store(store).paths() if p.name.endswith("-deps"))
    fsutil.link_tree(deps, copy)
    for f in find_elf_files(copy):
        os.chmod(f, 0o644)
        f.write_bytes(f.read_bytes())  # a private, writable copy of each ELF file
    start = time.perf_counter()
    plan = elf.plan_patchelf(copy, toolchain_root=Path(deps_stage.resolve(project)[1].root),
                             library_dirs=deps_stage.resolve(project)[1].library_dirs)
    edited = elf.apply_plan(plan, patchelf=locate_patchelf())
    rows.append((f"auto-patchelf ({len(find_elf_files(copy))} ELF files, {edited} edited)",
                 f"{time.perf_counter() - start:.2f} s", "-", "-"))

    for label, path in (("relinked deps (shared by every closure)", relinked),
                        ("closure (the app's own files, links to the deps)", closure)):
        files = sum(len(fs) for _, _, fs in os.walk(path))
        size = nar_hash(path).size
        rows.append((label, f"{size / 1e6:.1f} MB (NAR)", f"{files} entries", "-"))
    rows.append(("peak RSS of venvseal itself", f"{full_rss:.0f} MB (build)",
                 f"{statistics.median(r for _, r, _ in noop):.0f} MB (no-op)", "-"))
    return report(rows, args.work)


def report(rows: list[tuple[str, str, str, str]], work: Path) -> int:
    """Print the table and remove the work folder."""
    print(f"authentik-deps on Debian sid, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| measure | venvseal | baseline | ratio / target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    deps_stage.remove(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
