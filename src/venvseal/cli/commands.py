"""One handler per CLI subcommand: call the library, hand the result to the Ui."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal import pipeline
from venvseal.cli.ui import Ui
from venvseal.deps.stage import Network
from venvseal.deps.stage import lock_project as deps_lock
from venvseal.errors import EXIT_BUILD, EXIT_OK, VenvsealError
from venvseal.recipe import model as recipe
from venvseal.recipe.model import Recipe
from venvseal.store import nar
from venvseal.store.core import Store, default_store_root
from venvseal.toolchain.sandbox import Sandbox

if TYPE_CHECKING:  # image and registry load only for the image and push commands
    from venvseal.oci.image import BuiltImage
    from venvseal.oci.registry import Blob, PushResult, Reference, Registry

DEFAULT_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
RESOLV_CONF = Path("/etc/resolv.conf")


def open_store(args: argparse.Namespace, ui: Ui | None = None) -> Store:
    """The store named by --store, $VENVSEAL_STORE, or the default under the data directory,
    with the substituters of --substituter, else of $VENVSEAL_SUBSTITUTERS (``ui`` hears
    what they fetch)."""
    root = args.store if args.store is not None else default_store_root(os.environ, Path.home())
    urls = getattr(args, "substituter", None) or os.environ.get("VENVSEAL_SUBSTITUTERS", "").split()
    if not urls:
        return Store(root)
    from venvseal.oci import cache, registry

    config = registry.docker_config_path(os.environ, Path.home())
    notify = ui.info if ui is not None else (lambda _msg: None)
    return Store(root, substituters=cache.substituters(urls, config_file=config, notify=notify))


def default_uv_cache(env: Mapping[str, str], home: Path) -> Path:
    """uv's cache for the deps stage: $VENVSEAL_UV_CACHE, else under the XDG cache folder."""
    if env.get("VENVSEAL_UV_CACHE"):
        return Path(env["VENVSEAL_UV_CACHE"])
    base = env.get("XDG_CACHE_HOME") or str(home / ".cache")
    return Path(base) / "venvseal" / "uv"


def host_network(env: Mapping[str, str]) -> Network:
    """What networked stages borrow from the host: resolver config and CA bundle."""
    ca = Path(env["SSL_CERT_FILE"]) if env.get("SSL_CERT_FILE") else DEFAULT_CA_FILE
    return Network(resolv_conf=RESOLV_CONF if RESOLV_CONF.exists() else None,
                   ca_file=ca if ca.is_file() else None)


def load(args: argparse.Namespace) -> Recipe:
    """The recipe named on the command line (default: the current folder's)."""
    found, _prefix = recipe.find_recipe(args.recipe, Path.cwd())
    return recipe.load_recipe(found)


def context(args: argparse.Namespace, ui: Ui, store: Store) -> pipeline.Context:
    """The side effects a pipeline run gets from this host."""
    cache = getattr(args, "uv_cache", None) or default_uv_cache(os.environ, Path.home())
    return pipeline.Context(store=store, sandbox=Sandbox.locate(), uv_cache=cache,
                            network=host_network(os.environ),
                            network_env=network_env(os.environ), on_step=ui.info,
                            jobs=len(os.sched_getaffinity(0)))


# Host variables a networked fetch may need; nothing else from the host reaches a build.
NETWORK_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "NO_PROXY", "SSL_CERT_FILE", "GIT_SSL_CAINFO")


def network_env(env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted host variables for fetches (proxies and CA bundles)."""
    return {k: env[k] for k in NETWORK_ENV if env.get(k)}


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
    lines = []
    for r in bad:
        files = ", ".join(r.changed_files[:5]) or "no file's time stamp or mode changed"
        more = f" and {len(r.changed_files) - 5} more" if len(r.changed_files) > 5 else ""
        lines.append(f"changed: {r.path}: recorded {r.expected.sri}, now {r.got.sri}; "
                     f"changed files: {files}{more}; repair with 'venvseal repair [RECIPE] "
                     f"{r.path}'")
    lines.append(f"{len(results)} path(s) checked, {len(bad)} changed")
    ui.result(
        {"checked": len(results),
         "changed": [{"path": str(r.path), "expected": r.expected.sri, "got": r.got.sri,
                      "files": list(r.changed_files)} for r in bad]},
        *lines,
    )
    return EXIT_BUILD if bad else EXIT_OK


def cmd_repair(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    with open_store(args, ui) as store:
        path = store.parse_path(args.path)
        ok = all(r.ok for r in store.verify([path])) if store.is_valid(path) else False
        if ok and not args.force:
            ui.result({"path": str(path), "repaired": False}, f"{path} is intact; nothing to do")
            return EXIT_OK
        ui.info(f"removing the damaged {path} and building it again")
        store.remove(path)
        res = pipeline.run_build(rec, context(args, ui, store))
        rebuilt = {res.path, res.deps.path, res.relinked, *res.fetched}
        if not store.is_valid(path):
            raise VenvsealError(f"{path} is not part of the build of {rec.file} (it built "
                                f"{', '.join(sorted(p.name for p in rebuilt))}); it was removed; "
                                "repair it with the recipe that made it")
    ui.result({"path": str(path), "repaired": True}, f"repaired {path}")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, ui: Ui) -> int:
    store = open_store(args)
    res = store.gc(dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{verb} {p}" for p in res.deleted]
    lines.append(f"{verb} {len(res.deleted)} path(s), freeing {human_size(res.freed_bytes)}")
    ui.result({"dry_run": args.dry_run, "deleted": [str(p) for p in res.deleted],
               "freed_bytes": res.freed_bytes}, *lines)
    return EXIT_OK


def cmd_deps(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    with open_store(args, ui) as store:
        res = pipeline.run_deps(rec, context(args, ui, store), update_hash=args.update_hash)
    data: dict[str, object] = {"path": str(res.path), "hash": res.hash.sri, "reused": res.reused,
                               "hash_updated": res.hash_updated}
    lines = []
    if res.report is not None:
        refs = res.report.references
        data["normalise"] = {
            "removed_files": res.report.removed_files, "stripped_elf": res.report.stripped_elf,
            "references": [r.text.decode("utf-8", "replace") for r in refs.references],
            "files_changed": res.report.files_changed,
            "records_rewritten": res.report.records_rewritten,
            "conflicts": [str(c) for c in res.report.conflicts]}
        for conflict in res.report.conflicts:
            ui.info(f"warning: {conflict}")
        ui.info(f"normalised: {res.report.removed_files} files removed, "
                f"{res.report.stripped_elf} ELF files stripped, {refs.summary()}, "
                f"{res.report.files_changed} files changed")
    if res.hash_updated:
        ui.info(f"{rec.file}: {rec.key_prefix}deps.hash = \"{res.hash.sri}\"")
    lines.append(str(res.path))
    ui.result(data, *lines)
    return EXIT_OK


def cmd_build(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    out_link = args.out_link.absolute() if args.out_link is not None else None
    with open_store(args, ui) as store:
        res = pipeline.run_build(rec, context(args, ui, store), out_link=out_link,
                                 update_hash=args.update_hash)
    data: dict[str, object] = {
        "path": str(res.path), "reused": res.reused, "deps": str(res.deps.path),
        "relinked": str(res.relinked), "deps_reused": res.deps.reused,
        "fetched": [str(p) for p in res.fetched],
        "out_link": str(out_link) if out_link else None,
        "substituted": [str(p) for p in res.substituted]}
    if res.verified is not None:
        data["verified"] = {"imports": res.verified.imports, "commands": res.verified.commands,
                            "elf_files": res.verified.elf_files}
        ui.info(f"verified: {res.verified.imports} imports, {res.verified.commands} commands, "
                f"{res.verified.elf_files} ELF files of the closure's own resolved by the "
                "dynamic loader (the dependencies' were, when the relinked deps were made)")
    ui.result(data, str(res.path))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    env = dict(args.env)
    env.update({name: os.environ[name] for name in args.pass_env if name in os.environ})
    with open_store(args, ui) as store:
        ctx = context(args, ui, store)
        tc = pipeline.resolve_toolchain(rec, ctx)
        res = pipeline.run_build(rec, ctx, tc=tc)
        code = pipeline.run_closure(tc, ctx, res.path, list(args.argv), env=env)
    return code


def cmd_closure(args: argparse.Namespace, ui: Ui) -> int:
    from venvseal.oci import runtime

    rec = load(args)
    with open_store(args) as store:
        ctx = context(args, ui, store)
        tc = pipeline.resolve_toolchain(rec, ctx)
        res = pipeline.run_build(rec, ctx, tc=tc)
        ctx.on_step(f"tracing what {res.path.name} needs from {tc.root} at run time")
        found = runtime.runtime_closure(rec, tc, res.path, runner=ctx.sandbox,
                                        references=res.references)
        whole = runtime.root_size(tc.root)
    files = [f for f in found.files if f.kind == "file"]
    for note in found.notes:
        ui.info(f"warning: {note}")
    ui.table(f"runtime closure of {res.path.name} from the toolchain root {tc.root}",
             ("path", "size", "why"),
             [(str(f.path), human_size(f.size) if f.kind == "file" else f.kind, f.why)
              for f in found.files])
    share = f"{100 * found.size / whole:.1f}%" if whole else "-"
    ui.result(
        {"path": str(res.path), "root": str(tc.root), "size": found.size,
         "root_size": whole, "count": len(found.files), "notes": list(found.notes),
         "image_path": [str(p) for p in found.path or ()],
         "files": [{"path": str(f.path), "host": None if f.content is not None else str(f.host),
                    "kind": f.kind, "size": f.size, "why": f.why} for f in found.files]},
        f"{len(found.files)} entries ({len(files)} files), {human_size(found.size)} "
        f"({found.size} bytes); the whole toolchain root {tc.root}: {human_size(whole)} "
        f"({whole} bytes); the runtime files are {share} of it")
    return EXIT_OK


def cmd_lock(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    with open_store(args) as store:
        ctx = context(args, ui, store)
        tc = pipeline.resolve_toolchain(rec, ctx)
        ctx.on_step(f"uv lock with {tc.python} in the sandbox")
        deps_lock(rec, tc, uv_cache=ctx.uv_cache, runner=ctx.sandbox, network=ctx.network)
    lock_file = rec.project / "uv.lock"
    ui.result({"lock": str(lock_file)}, str(lock_file))
    return EXIT_OK


def cmd_toolchain(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    with open_store(args) as store:
        tc = pipeline.resolve_toolchain(rec, context(args, ui, store))
    ui.result({"root": str(tc.root), "python": str(tc.python), "identity": tc.identity},
              str(tc.root))
    return EXIT_OK


def cmd_check(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    with open_store(args) as store:
        res = pipeline.check_deps(rec, context(args, ui, store))
    lines = [f"first build:  {res.first.sri}", f"second build: {res.second.sri}"]
    lines += [f"  {d}" for d in res.differences]
    lines.append("reproducible: the two builds are identical" if res.ok else
                 f"NOT reproducible: {len(res.differences)} path(s) differ")
    ui.result({"reproducible": res.ok, "first": res.first.sri, "second": res.second.sri,
               "differences": [{"path": d.path, "what": d.what} for d in res.differences]},
              *lines)
    return EXIT_OK if res.ok else EXIT_BUILD


def cmd_show(args: argparse.Namespace, ui: Ui) -> int:
    rec = load(args)
    data = {"recipe": str(rec.file), "project": str(rec.project), **rec.canonical()}
    ui.result(data, f"{rec.file}: ok ({rec.app.name} {rec.app.version})",
              f"project: {rec.project}")
    return EXIT_OK


def _image_blobs(rec: Recipe, args: argparse.Namespace, ui: Ui, store: Store,
                 scratch: Path) -> tuple[pipeline.BuildResult, BuiltImage]:
    """Build (or reuse) the closure, find its runtime closure, write the layers to scratch."""
    from venvseal.oci import image
    from venvseal.oci import runtime as closure

    ctx = context(args, ui, store)
    tc = pipeline.resolve_toolchain(rec, ctx)
    res = pipeline.run_build(rec, ctx, tc=tc)
    ctx.on_step(f"finding what {res.path.name} needs from the toolchain root at run time")
    runtime = closure.runtime_closure(rec, tc, res.path, runner=ctx.sandbox,
                                      references=res.references)
    for note in runtime.notes:
        ui.info(f"warning: {note}")
    ctx.on_step("writing the image's layers")
    return res, image.build_blobs(rec, res, runtime, scratch)


def cmd_image(args: argparse.Namespace, ui: Ui) -> int:
    from venvseal.errors import UsageError
    from venvseal.oci import image, registry

    rec = load(args)
    tag = (registry.parse_reference(args.tag, require_host=False) if args.tag
           else image.default_tag(rec))
    out = args.output.absolute()
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder; create it or choose another -o FILE")
    with open_store(args, ui) as store, store.scratch() as scratch:
        res, built = _image_blobs(rec, args, ui, store, scratch)
        size = image.write_archive(built, out, tag)
    for i, layer in enumerate(built.layers, 1):
        ui.info(f"layer {i} ({layer.what}): {human_size(layer.size)} compressed, "
                f"{layer.entries} entries")
    ui.info(f"wrote {out} ({human_size(size)}) as {tag}")
    ui.result({"path": str(out), "tag": str(tag), "digest": built.manifest_digest,
               "closure": str(res.path),
               "config": built.config_digest, "size": size,
               "layers": [{"what": layer.what, "digest": layer.digest, "size": layer.size,
                           "diff_id": layer.diff_id, "entries": layer.entries}
                          for layer in built.layers]},
              built.manifest_digest)
    return EXIT_OK


def _push(ui: Ui, client: Registry, ref: Reference, manifest: bytes, media_type: str,
          blobs: list[Blob]) -> PushResult:
    from venvseal.oci import registry

    with ui.progress(f"pushing {ref}", total=sum(b.size for b in blobs)) as advance:
        res = registry.push_image(client, ref, manifest, media_type, blobs, progress=advance)
    ui.info(f"pushed {ref}: {len(res.uploaded)} blob(s) uploaded, {len(res.existing)} "
            "already there")
    return res


def cmd_push(args: argparse.Namespace, ui: Ui) -> int:
    from venvseal.errors import UsageError
    from venvseal.oci import image, registry

    ref = registry.parse_reference(args.ref)
    if args.archive is not None and args.recipe is not None:
        raise UsageError("venvseal push: give a RECIPE or --archive FILE, not both")
    config = registry.docker_config_path(os.environ, Path.home())
    client = registry.Registry.for_reference(ref, config_file=config)
    if args.archive is not None:
        with image.open_archive(args.archive) as local:
            if not (ref.tag or ref.digest):
                ref = ref.with_tag(local.tag or "latest")
            res = _push(ui, client, ref, local.manifest, local.media_type, list(local.blobs))
    else:
        rec = load(args)
        with open_store(args, ui) as store, store.scratch() as scratch:
            _res, built = _image_blobs(rec, args, ui, store, scratch)
            if not (ref.tag or ref.digest):
                ref = ref.with_tag(image.default_tag(rec).tag or "latest")
            res = _push(ui, client, ref, built.manifest, registry.OCI_MANIFEST, built.blobs())
    ui.result({"ref": str(ref), "digest": res.digest, "uploaded": list(res.uploaded),
               "existing": list(res.existing)}, res.digest)
    return EXIT_OK


def cmd_cache_push(args: argparse.Namespace, ui: Ui) -> int:
    from venvseal.oci import cache, registry

    rec = load(args)
    target = cache.OciTarget.parse(args.to)
    config = registry.docker_config_path(os.environ, Path.home())
    client = registry.Registry(target.registry,
                               credentials=registry.load_credentials(config, target.registry))
    with open_store(args, ui) as store:
        ctx = context(args, ui, store)
        tc = pipeline.resolve_toolchain(rec, ctx)
        res = pipeline.run_build(rec, ctx, tc=tc)
        # The deps path goes too (another machine needs it to build a changed app), also
        # when this build did not need it here (everything reused or fetched).
        deps_path = pipeline.run_deps(rec, ctx, tc=tc).path
        paths = [res.path, deps_path, *res.fetched]  # references (relinked) go too
        if rec.toolchain.debian is not None:
            paths.append(store.parse_path(str(tc.root)))
        pushed = cache.push_paths(store, paths, target, client=client, on_step=ui.info)
    sent = sum(p.bytes_sent for p in pushed)
    lines = [f"{'pushed' if p.uploaded else 'present'} {p.path.name}" for p in pushed]
    lines.append(f"{sum(p.uploaded for p in pushed)} of {len(pushed)} path(s) pushed to "
                 f"{target} ({human_size(sent)} sent)")
    ui.result({"target": str(target), "bytes_sent": sent,
               "paths": [{"path": str(p.path), "tag": p.tag, "uploaded": p.uploaded,
                          "bytes_sent": p.bytes_sent} for p in pushed]}, *lines)
    return EXIT_OK
