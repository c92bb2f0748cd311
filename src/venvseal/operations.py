"""What commands do with the pipeline's outputs: run a closure, repair a store path, choose
the paths a build shares through a cache. Library code: the CLI calls it and renders."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from venvseal import pipeline
from venvseal.errors import UsageError, VenvsealError
from venvseal.recipe.model import Recipe
from venvseal.store.core import STORE_DIR, StorePath
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain import sandbox as sb


@dataclass(frozen=True, kw_only=True, slots=True)
class Bind:
    """A host folder made visible to a run at ``target`` (read-only unless ``writable``)."""

    host: Path
    target: PurePosixPath
    writable: bool = True


def unmountable_bind(binds: tuple[Bind, ...], store_root: Path) -> Bind | None:
    """The first bind whose target is a folder the (read-only) store lacks: bubblewrap cannot
    make its mount point there ("Can't mkdir ...: Read-only file system")."""
    for bind in binds:
        if bind.target.is_relative_to(STORE_DIR):
            inside = store_root / bind.target.relative_to(STORE_DIR)
            if not (inside.is_dir() if bind.host.is_dir() else inside.exists()):
                return bind
    return None


def on_path(program: str, closure: Path, tc: toolchain.ResolvedToolchain) -> bool:
    """Whether a run finds ``program`` (a bare name) in the closure's bin/ or on the
    toolchain's PATH, as the sandbox's PATH is those folders, in that order. (A closure's
    bin/ entry may link into the toolchain, so it counts as it is, unresolved.)"""
    if os.path.lexists(closure / "bin" / program):
        return True
    found = (toolchain.resolve_in_root(tc.root, folder / program) for folder in tc.path)
    return any(f.is_file() and os.access(f, os.X_OK) for f in found)


def closure_command(tc: toolchain.ResolvedToolchain, ctx: pipeline.Context, path: StorePath,
                    argv: list[str], *, env: Mapping[str, str], identity: sb.Identity,
                    cwd: Path | None = None, binds: tuple[Bind, ...] = ()) -> list[str]:
    """The bubblewrap command line running ``argv`` with the closure at its logical path,
    the toolchain as / and network; ``@out@`` and ``@python@`` in ``argv`` are expanded.

    ``cwd`` (a host folder, bound writable at its own path) is the working folder, else the
    closure; ``binds`` are more host folders. Pure: the caller runs it (in the foreground),
    passing on ``identity``'s descriptors (:func:`venvseal.toolchain.sandbox.identity_fds`).
    """
    from venvseal.assemble.textedit import expand

    if bad := unmountable_bind(binds, ctx.store.root):
        raise UsageError(f"--bind {bad.host}:{bad.target}: the closure (read-only) has no "
                         f"{bad.target} to mount on; bind a folder it has (add one with "
                         "[[assemble.copy]]), or one outside the store and point the app there")
    program = argv[0] if argv else ""
    if program and "/" not in program and "@" not in program and not on_path(program, path,
                                                                           tc):
        raise UsageError(f"{program}: neither the closure's bin/ nor the toolchain's PATH "
                         f"({':'.join(map(str, tc.path))}) has it; give its path, or see "
                         "what the closure has: venvseal run -- ls @out@/bin")
    logical = ctx.store.logical(path)
    values = {"out": str(logical), "python": str(logical / "bin" / "python")}
    full_env = {**sb.fixed_env(tc.path), **env,
                "PATH": f"{logical}/bin:" + ":".join(map(str, tc.path))}
    mounts = [sb.Mount(host=ctx.store.root, target=STORE_DIR)]
    mounts += [sb.Mount(host=b.host, target=b.target, writable=b.writable) for b in binds]
    if cwd is not None:
        mounts.append(sb.Mount(host=cwd, target=PurePosixPath(cwd), writable=True))
    spec = sb.SandboxSpec(root=tc.root, mounts=tuple(mounts), env=full_env, network=True,
                          cwd=PurePosixPath(cwd) if cwd is not None else logical,
                          resolv_conf=ctx.network.resolv_conf)
    return sb.bwrap_argv(ctx.sandbox.bwrap, spec, [expand(a, values) for a in argv],
                         identity=identity)


def shared_paths(rec: Recipe, ctx: pipeline.Context, tc: toolchain.ResolvedToolchain,
                 res: pipeline.BuildResult) -> list[StorePath]:
    """The store paths a build shares through a cache: the closure (its references go with
    it), the deps path, the fetches, and a Debian toolchain's root and pinned .debs."""
    # The deps path goes too (another machine needs it to build a changed app), also when
    # this build did not need it here (everything reused or fetched).
    deps_path = pipeline.run_deps(rec, ctx, tc=tc).path
    paths = [res.path, deps_path, *res.fetched]
    return paths + pipeline.toolchain_paths(rec, ctx.store, tc)


@dataclass(frozen=True, kw_only=True, slots=True)
class RepairResult:
    """What ``repair`` did: ``repaired`` is False when the path was intact already."""

    path: StorePath
    repaired: bool


def repair(rec: Recipe, ctx: pipeline.Context, path: StorePath, *,
           force: bool = False) -> RepairResult:
    """Remove a damaged (or, with ``force``, any) store path and build the recipe again,
    which makes it anew; refuses (after removing it) a path the recipe does not make."""
    store = ctx.store
    intact = store.is_valid(path) and all(r.ok for r in store.verify([path]))
    if intact and not force:
        return RepairResult(path=path, repaired=False)
    ctx.on_step(f"removing the damaged {path} and building it again")
    store.remove(path)
    res = pipeline.run_build(rec, ctx)
    rebuilt = {res.path, res.deps.path, res.relinked, *res.fetched}
    if not store.is_valid(path):
        raise VenvsealError(f"{path} is not part of the build of {rec.file} (it built "
                            f"{', '.join(sorted(p.name for p in rebuilt))}); it was removed; "
                            "repair it with the recipe that made it")
    return RepairResult(path=path, repaired=True)
