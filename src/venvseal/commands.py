"""One handler per CLI subcommand: call the library, hand the result to the Ui."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from venvseal import nar, recipe
from venvseal.errors import EXIT_BUILD, EXIT_OK
from venvseal.store import Store, default_store_root
from venvseal.ui import Ui


def open_store(args: argparse.Namespace) -> Store:
    """The store named by --store, $VENVSEAL_STORE, or the default under the data directory."""
    root = args.store if args.store is not None else default_store_root(os.environ, Path.home())
    return Store(root)


def human_size(n: int) -> str:
    """``n`` bytes written for people (binary units)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def cmd_hash(args: argparse.Namespace, ui: Ui) -> int:
    with ui.progress(f"hashing {args.path}") as advance:
        res = nar.nar_hash(args.path, progress=advance)
    ui.result(
        {"path": str(args.path), "hash": res.hash.sri, "nix32": res.hash.nix32,
         "base16": res.hash.base16, "nar_size": res.size, "files": res.files},
        res.hash.format(args.format),
    )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, ui: Ui) -> int:
    store = open_store(args)
    paths = [store.parse_path(p) for p in args.paths] if args.paths else None
    with ui.progress("verifying store paths") as advance:
        results = store.verify(paths, progress=advance)
    bad = [r for r in results if not r.ok]
    lines = [f"changed: {r.path}: recorded {r.expected.sri}, now {r.got.sri}" for r in bad]
    lines.append(f"{len(results)} path(s) checked, {len(bad)} changed")
    ui.result(
        {"checked": len(results),
         "changed": [{"path": str(r.path), "expected": r.expected.sri, "got": r.got.sri}
                     for r in bad]},
        *lines,
    )
    return EXIT_BUILD if bad else EXIT_OK


def cmd_gc(args: argparse.Namespace, ui: Ui) -> int:
    store = open_store(args)
    res = store.gc(dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{verb} {p}" for p in res.deleted]
    lines.append(f"{verb} {len(res.deleted)} path(s), freeing {human_size(res.freed_bytes)}")
    ui.result({"dry_run": args.dry_run, "deleted": [str(p) for p in res.deleted],
               "freed_bytes": res.freed_bytes}, *lines)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, ui: Ui) -> int:
    found = recipe.find_recipe(args.recipe if args.recipe is not None else Path.cwd())
    rec = recipe.load_recipe(found[0])
    data = {"recipe": str(rec.file), "project": str(rec.project), **rec.canonical()}
    ui.result(data, f"{rec.file}: ok ({rec.app.name} {rec.app.version})",
              f"project: {rec.project}")
    return EXIT_OK
