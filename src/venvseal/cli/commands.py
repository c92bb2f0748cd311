"""One handler per CLI subcommand: take the session's recipe and store, call the library,
hand the result to the Ui. Handlers are listed in the order people use them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal import operations, pipeline
from venvseal.cli import foreground
from venvseal.cli.render import human_size, normalise_data, normalise_lines, stage_lines
from venvseal.cli.session import Session, network_env
from venvseal.cli.ui import Ui
from venvseal.deps.stage import lock_project as deps_lock
from venvseal.errors import EXIT_BUILD, EXIT_OK, UsageError, VenvsealError
from venvseal.store import nar
from venvseal.store.core import STORE_DIR, PathInfo, Store
from venvseal.toolchain.sandbox import identity_fds

if TYPE_CHECKING:  # image and registry load only for the image and push commands
    from venvseal.cli.session import Opened
    from venvseal.oci.image import BuiltImage
    from venvseal.oci.registry import Blob, PushResult, Reference, Registry


def open_store(args: argparse.Namespace, ui: Ui | None = None) -> Store:
    """The store the command line names, with its substituters (see Session.store)."""
    return Session(args=args, ui=ui or Ui(json_mode=False, env={})).store()


def cmd_init(s: Session) -> int:
    from venvseal.cli import init_command

    return init_command.run(s)


def cmd_show(s: Session) -> int:
    rec = s.load()
    data = {"recipe": str(rec.file), "project": str(rec.project), **rec.canonical()}
    s.ui.result(data, f"{rec.file}: ok ({rec.app.name} {rec.app.version})",
                f"project: {rec.project}")
    return EXIT_OK


def _hash_notice(ui: Ui, o: Opened, deps: pipeline.DepsResult) -> None:
    """Say that the toolchain moved, and what --update-hash rewrote."""
    rec = o.recipe
    if deps.drift:
        more = f" and {len(deps.drift) - 8} more" if len(deps.drift) > 8 else ""
        ui.info(f"notice: the toolchain differs from the one {rec.file}: "
                f"{rec.key_prefix}deps.hash was declared with ({', '.join(deps.drift[:8])}"
                f"{more}); declaring the hash built with this one (--update-hash-on-drift)")
    if deps.hash_updated:
        was = rec.deps.hash.sri if rec.deps.hash is not None else ""
        ui.info(f"updated {rec.file}: {rec.key_prefix}deps.hash = "
                f"\"{deps.hash.sri}\" (was \"{was}\")")
    if deps.lock_file is not None:
        ui.info(f"{deps.lock_file}: recorded what {rec.key_prefix}deps.hash was declared with "
                "(toolchain, packages, uv, uv.lock)")


def cmd_deps(s: Session) -> int:
    with s.open() as o:
        res = pipeline.run_deps(o.recipe, o.ctx, update_hash=s.args.update_hash,
                                update_on_drift=s.args.update_hash_on_drift)
    data: dict[str, object] = {"path": str(res.path), "hash": res.hash.sri, "reused": res.reused,
                               "hash_updated": res.hash_updated,
                               "lock_file": str(res.lock_file) if res.lock_file else None,
                               "drift": list(res.drift)}
    if res.report is not None:
        data["normalise"] = normalise_data(res.report)
        for line in normalise_lines(res.report):
            s.ui.info(line)
    _hash_notice(s.ui, o, res)
    s.ui.result(data, str(res.path))
    return EXIT_OK


def cmd_build(s: Session) -> int:
    out_link = s.args.out_link.absolute() if s.args.out_link is not None else None
    with s.open() as o:
        previous = _linked(o.store, out_link)
        res = o.build(out_link=out_link, update_hash=s.args.update_hash,
                      update_on_drift=s.args.update_hash_on_drift)
        root = o.store.root
    data: dict[str, object] = {
        "path": str(res.path), "reused": res.reused, "deps": str(res.deps.path),
        "relinked": str(res.relinked), "deps_reused": res.deps.reused,
        "fetched": [str(p) for p in res.fetched],
        "out_link": str(out_link) if out_link else None,
        "substituted": [str(p) for p in res.substituted],
        "deps_hash_updated": res.deps.hash_updated, "deps_drift": list(res.deps.drift)}
    _hash_notice(s.ui, o, res.deps)
    for line in stage_lines(res, previous):
        s.ui.info(line)
    if res.verified is not None:
        data["verified"] = {"imports": res.verified.imports, "commands": res.verified.commands,
                            "elf_files": res.verified.elf_files,
                            "skipped": dict(res.verified.skipped)}
        for name, why in res.verified.skipped:
            s.ui.info(f"import-all skipped {name}: {why}")
        s.ui.info(f"verified: {res.verified.imports} imports, {res.verified.commands} commands, "
                  f"{res.verified.elf_files} ELF files of the closure's own resolved by the "
                  "dynamic loader (the dependencies' were, when the relinked deps were made)")
    if root.absolute() != Path(STORE_DIR):
        s.ui.info(f"run it with: venvseal run {_recipe_arg(s)}-- <command> (its bin/ scripts "
                  f"name {STORE_DIR}, and this store is at {root}; see the README, "
                  "'Running a closure on the host')")
    s.ui.result(data, str(res.path))
    return EXIT_OK


def _linked(store: Store, out_link: Path | None) -> PathInfo | None:
    """What ``out_link`` names in ``store`` now, if it names a valid path."""
    if out_link is None or not out_link.is_symlink():
        return None
    try:
        return store.query(store.parse_path(str(out_link)))
    except VenvsealError:  # it names something else: nothing to compare with
        return None


def _recipe_arg(s: Session) -> str:
    return f"{s.args.recipe} " if s.args.recipe is not None else ""


def _binds(s: Session) -> tuple[operations.Bind, ...]:
    return tuple(s.args.bind)


def _in_closure(s: Session, argv: list[str]) -> int:
    env = dict(s.args.env)
    env.update({name: s.env[name] for name in s.args.pass_env if name in s.env})
    cwd = s.args.cwd.absolute() if s.args.cwd is not None else None
    if cwd is not None and not cwd.is_dir():
        raise UsageError(f"--cwd {s.args.cwd}: not a folder; create it or choose another")
    with s.open() as o:
        res = o.build()
        if not argv:  # venvseal shell
            shells = ("bin/bash", "bin/sh")
            found = [sh for sh in shells if (o.toolchain.root / sh).exists()]
            if not found:
                raise UsageError(f"the toolchain root {o.toolchain.root} has no /bin/bash or "
                                 "/bin/sh; give a command: venvseal run DIR -- COMMAND")
            argv = ["/" + found[0]]
            s.ui.info(f"a shell in {res.path.name} (the closure is at @out@ = "
                      f"{o.store.logical(res.path)}; exit to leave)")
        with identity_fds() as identity:
            command = operations.closure_command(o.toolchain, o.ctx, res.path, argv, env=env,
                                                 identity=identity, cwd=cwd, binds=_binds(s))
            return foreground.call(command, pass_fds=(identity.passwd, identity.group))


def cmd_run(s: Session) -> int:
    if not s.args.argv:
        raise UsageError("venvseal run: give the command after '--', e.g. "
                         "venvseal run . -- @python@ -c 'import app'")
    return _in_closure(s, list(s.args.argv))


def cmd_shell(s: Session) -> int:
    return _in_closure(s, [])


def _image_blobs(o: Opened, scratch: Path) -> tuple[pipeline.BuildResult, BuiltImage]:
    """Build (or reuse) the closure, then its image (layers kept in the store)."""
    from venvseal.oci import image

    res = o.build()
    paths = image.ImagePaths(closure=res.path, relinked=res.relinked, fetched=res.fetched)
    return res, image.assemble_image(o.recipe, o.toolchain, paths, store=o.store,
                                     runner=o.ctx.sandbox, scratch=scratch,
                                     on_step=o.ctx.on_step,
                                     on_note=lambda note: o.ctx.on_step(f"warning: {note}"))


def cmd_image(s: Session) -> int:
    from venvseal.oci import image, registry

    out = s.args.output.absolute()
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder; create it or choose another -o FILE")
    with s.open() as o, o.store.scratch() as scratch:
        tag = (registry.parse_reference(s.args.tag, require_host=False) if s.args.tag
               else image.default_tag(o.recipe))
        res, built = _image_blobs(o, scratch)
        size = image.save(built, out, tag, ledger=image.archive_ledger(o.store))
    for i, (layer, reused) in enumerate(zip(built.layers, built.reused, strict=True), 1):
        s.ui.info(f"layer {i} ({layer.what}): {human_size(layer.size)} compressed, "
                  f"{layer.entries} entries" + (", kept from an earlier image" if reused else ""))
    s.ui.info(f"wrote {out} ({human_size(size)}) as {tag}")
    s.ui.result({"path": str(out), "tag": str(tag), "digest": built.manifest_digest,
                 "closure": str(res.path),
                 "config": built.config_digest, "size": size,
                 "layers": [{"what": layer.what, "digest": layer.digest, "size": layer.size,
                             "diff_id": layer.diff_id, "entries": layer.entries,
                             "media_type": layer.media_type, "reused": reused}
                            for layer, reused in zip(built.layers, built.reused, strict=True)]},
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


def cmd_push(s: Session) -> int:
    from venvseal.oci import archive, image, registry

    ref = registry.parse_reference(s.args.ref)
    if s.args.archive is not None and s.args.recipe is not None:
        raise UsageError("venvseal push: give a RECIPE or --archive FILE, not both")
    config = registry.docker_config_path(s.env, s.home)
    client = registry.Registry.for_reference(ref, config_file=config,
                                             env=network_env(s.env))
    if s.args.archive is not None:
        with archive.open_archive(s.args.archive) as local:
            if not (ref.tag or ref.digest):
                ref = ref.with_tag(local.tag or "latest")
            res = _push(s.ui, client, ref, local.manifest, local.media_type, list(local.blobs))
    else:
        with s.open() as o, o.store.scratch() as scratch:
            _res, built = _image_blobs(o, scratch)
            if not (ref.tag or ref.digest):
                ref = ref.with_tag(image.default_tag(o.recipe).tag or "latest")
            res = _push(s.ui, client, ref, built.manifest, registry.OCI_MANIFEST,
                        built.blobs())
    s.ui.result({"ref": str(ref), "digest": res.digest, "uploaded": list(res.uploaded),
                 "existing": list(res.existing)}, res.digest)
    return EXIT_OK


def cmd_closure(s: Session) -> int:
    from venvseal.oci import runtime

    with s.open() as o:
        res = o.build()
        tc = o.toolchain
        o.ctx.on_step(f"tracing what {res.path.name} needs from {tc.root} at run time")
        found = runtime.runtime_closure(o.recipe, tc, res.path, runner=o.ctx.sandbox,
                                        references=res.references)
        whole = runtime.root_size(tc.root)
    files = [f for f in found.files if f.kind == "file"]
    for note in found.notes:
        s.ui.info(f"warning: {note}")
    s.ui.table(f"runtime closure of {res.path.name} from the toolchain root {tc.root}",
               ("path", "size", "why"),
               [(str(f.path), human_size(f.size) if f.kind == "file" else f.kind, f.why)
                for f in found.files])
    share = f"{100 * found.size / whole:.1f}%" if whole else "-"
    s.ui.result(
        {"path": str(res.path), "root": str(tc.root), "size": found.size,
         "root_size": whole, "count": len(found.files), "notes": list(found.notes),
         "image_path": [str(p) for p in found.path or ()],
         "files": [{"path": str(f.path), "host": None if f.content is not None else str(f.host),
                    "kind": f.kind, "size": f.size, "why": f.why} for f in found.files]},
        f"{len(found.files)} entries ({len(files)} files), {human_size(found.size)} "
        f"({found.size} bytes); the whole toolchain root {tc.root}: {human_size(whole)} "
        f"({whole} bytes); the runtime files are {share} of it")
    return EXIT_OK


def cmd_check(s: Session) -> int:
    with s.open() as o:
        res = pipeline.check_deps(o.recipe, o.ctx)
    lines = [f"first build:  {res.first.sri}", f"second build: {res.second.sri}"]
    lines += [f"  {d}" for d in res.differences]
    lines.append("reproducible: the two builds are identical" if res.ok else
                 f"NOT reproducible: {len(res.differences)} path(s) differ")
    s.ui.result({"reproducible": res.ok, "first": res.first.sri, "second": res.second.sri,
                 "differences": [{"path": d.path, "what": d.what} for d in res.differences]},
                *lines)
    return EXIT_OK if res.ok else EXIT_BUILD


def cmd_lock(s: Session) -> int:
    with s.open() as o:
        o.ctx.on_step(f"uv lock with {o.toolchain.python} in the sandbox")
        deps_lock(o.recipe, o.toolchain, uv_cache=o.ctx.uv_cache, runner=o.ctx.sandbox,
                  network=o.ctx.network)
    lock_file = o.recipe.project / "uv.lock"
    s.ui.result({"lock": str(lock_file)}, str(lock_file))
    return EXIT_OK


def cmd_toolchain(s: Session) -> int:
    with s.open() as o:
        pin = s.args.lock or s.args.update_lock
        tc = pipeline.lock_toolchain(o.recipe, o.ctx) if pin else o.toolchain
    s.ui.result({"root": str(tc.root), "python": str(tc.python), "identity": tc.identity},
                str(tc.root))
    return EXIT_OK


def cmd_cache_push(s: Session) -> int:
    from venvseal.oci import cache, registry

    target = cache.OciTarget.parse(s.args.to)
    config = registry.docker_config_path(s.env, s.home)
    client = registry.Registry(target.registry,
                               credentials=registry.load_credentials(config, target.registry),
                               env=network_env(s.env))
    with s.open() as o:
        paths = operations.shared_paths(o.recipe, o.ctx, o.toolchain, o.build())
        pushed = cache.push_paths(o.store, paths, target, client=client, on_step=s.ui.info)
    sent = sum(p.bytes_sent for p in pushed)
    lines = [f"{'pushed' if p.uploaded else 'present'} {p.path.name}" for p in pushed]
    lines.append(f"{sum(p.uploaded for p in pushed)} of {len(pushed)} path(s) pushed to "
                 f"{target} ({human_size(sent)} sent)")
    s.ui.result({"target": str(target), "bytes_sent": sent,
                 "paths": [{"path": str(p.path), "tag": p.tag, "uploaded": p.uploaded,
                            "bytes_sent": p.bytes_sent} for p in pushed]}, *lines)
    return EXIT_OK


def cmd_hash(s: Session) -> int:
    with s.ui.progress(f"hashing {s.args.path}") as advance:
        res = nar.nar_hash(s.args.path, progress=advance)
    s.ui.result(
        {"path": str(s.args.path), "hash": res.hash.sri, "nix32": res.hash.nix32,
         "base16": res.hash.base16, "nar_size": res.size, "files": res.files},
        res.hash.format(s.args.format),
    )
    return EXIT_OK


def cmd_store_verify(s: Session) -> int:
    with s.store_to_read() as store:  # verify pins each path: closing unpins them
        paths = [store.parse_path(p) for p in s.args.paths] if s.args.paths else None
        with s.ui.progress("verifying store paths") as advance:
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
    s.ui.result(
        {"checked": len(results),
         "changed": [{"path": str(r.path), "expected": r.expected.sri, "got": r.got.sri,
                      "files": list(r.changed_files)} for r in bad]},
        *lines,
    )
    return EXIT_BUILD if bad else EXIT_OK


def cmd_repair(s: Session) -> int:
    with s.open() as o:
        res = operations.repair(o.recipe, o.ctx, o.store.parse_path(s.args.path),
                                force=s.args.force)
    s.ui.result({"path": str(res.path), "repaired": res.repaired},
                f"repaired {res.path}" if res.repaired else f"{res.path} is intact; nothing to do")
    return EXIT_OK


def cmd_gc(s: Session) -> int:
    with s.store_to_read() if s.args.dry_run else s.store() as store:
        res = store.gc(dry_run=s.args.dry_run, all_build_inputs=s.args.all_build_inputs)
    verb = "would delete" if s.args.dry_run else "deleted"
    lines = [f"{verb} {p}" for p in res.deleted]
    lines.append(f"{verb} {len(res.deleted)} path(s), freeing {human_size(res.freed_bytes)}")
    s.ui.result({"dry_run": s.args.dry_run, "deleted": [str(p) for p in res.deleted],
                 "freed_bytes": res.freed_bytes}, *lines)
    return EXIT_OK
