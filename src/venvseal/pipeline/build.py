"""The stages after the deps: fetches, the relinked deps, the assembly and its checks, each
reused from the store when its inputs match."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal.deps import stage as deps
from venvseal.errors import StoreError
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import read_lock
from venvseal.store.core import (
    Realised,
    StorePath,
)
from venvseal.toolchain import resolve as toolchain

if TYPE_CHECKING:  # these pull in pyelftools, needed only when building or comparing
    from venvseal.assemble.verify import VerifyReport


from venvseal.pipeline.context import Context
from venvseal.pipeline.deps import DepsResult, run_deps
from venvseal.pipeline.toolchains import resolve_toolchain


def relinked_name(rec: Recipe) -> str:
    return f"{rec.app.name}-deps-relinked"


def run_relinked(rec: Recipe, ctx: Context, tc: toolchain.ResolvedToolchain,
                 deps_path: StorePath, need_deps: Callable[[], StorePath]) -> Realised:
    """The deps venv relinked against ``tc`` and compiled (relinked.py): reused, fetched
    from a substituter, or made (``need_deps()`` realises the deps path first)."""
    from venvseal.assemble import relinked

    inputs = relinked.RelinkInputs(deps=deps_path, toolchain=tc,
                                   ignore_missing=tuple(rec.assemble.ignore_missing))
    fingerprint = inputs.fingerprint()
    path = ctx.store.make_path(relinked_name(rec), fingerprint)
    found = ctx.store.substitute(path)  # valid already, or fetched
    if found is not None:
        return found
    ctx.store.check_intact(need_deps())  # it is about to be read

    def produce(out: Path) -> None:
        ctx.on_step(f"relinking and compiling the dependencies of {rec.app.name} (once per "
                    "deps path and toolchain)")
        made = relinked.make(inputs, out, logical=ctx.store.logical(path), runner=ctx.sandbox)
        ctx.on_step(f"relinked deps: {made.elf_files} ELF files resolved by the dynamic loader "
                    f"({made.edited} relinked); {made.compiled} modules compiled, "
                    f"{made.not_compiled} files skipped as not Python for this interpreter")

    info = ctx.store.add(path, produce, build_inputs=[deps_path],
                         inputs={"stage": "relinked", "fingerprint": fingerprint},
                         on_wait=lambda p: ctx.on_step(f"waiting for another venvseal "
                                                       f"building {p.name}"))
    return Realised(info, "built")


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildResult:
    """The closure's store path and how each stage was obtained."""

    path: StorePath
    deps: DepsResult
    relinked: StorePath
    fetched: tuple[StorePath, ...]
    reused: bool
    verified: VerifyReport | None = None
    substituted: tuple[StorePath, ...] = ()  # paths fetched from a substituter, not built

    @property
    def references(self) -> tuple[StorePath, ...]:
        """The store paths the closure refers to, which must stand beside it to run."""
        return (self.relinked, *self.fetched)


def run_build(rec: Recipe, ctx: Context, *, out_link: Path | None = None,
              update_hash: bool = False, tc: toolchain.ResolvedToolchain | None = None,
              update_on_drift: bool = False) -> BuildResult:
    """deps -> fetches -> offline assembly -> verify -> store (-> out-link)."""
    from venvseal.assemble import stage as assemble
    from venvseal.assemble import verify
    from venvseal.fetch import realise as fetch
    from venvseal.toolchain import trace

    lock = read_lock(rec.project)  # read once: the deps and the assembly stage both use it
    tc = tc or resolve_toolchain(rec, ctx)
    # The deps path is checked for edits only when a stage reads it (run_relinked, and
    # below); a reused closure is checked itself.
    deps_result = run_deps(rec, ctx, update_hash=update_hash, tc=tc, check=False, lock=lock,
                           defer=True, update_on_drift=update_on_drift)
    realised: list[DepsResult] = []

    def need_deps() -> StorePath:
        """The deps path in the store, fetched or built the first time a stage reads it."""
        if deps_result.deferred and not realised:
            realised.append(run_deps(rec, ctx, update_hash=update_hash, tc=tc, check=False,
                                     lock=lock))
        return deps_result.path

    relinked = run_relinked(rec, ctx, tc, deps_result.path, need_deps)
    linked = relinked.path
    sources = [fetch.realise_fetch(f, ctx.store, recipe_file=rec.file,
                                   key_prefix=rec.key_prefix, index=i,
                                   network_env=ctx.network_env)
               for i, f in enumerate(rec.fetch)]
    fetched = tuple(
        assemble.Fetched(name=f.name, path=r.path, logical=ctx.store.logical(r.path),
                         install=f.install)
        for f, r in zip(rec.fetch, sources, strict=True))
    inputs = assemble.collect_inputs(rec, tc, deps_result.path, linked, fetched, lock)
    path = ctx.store.make_path(f"{rec.app.name}-{rec.app.version}", inputs.fingerprint())
    found = ctx.store.substitute(path)
    if found is None:  # neither valid nor fetched
        # The assembly copies from the fetched paths. It only links to the relinked deps:
        # a damaged one is repaired for every closure at once, and verify re-hashes it.
        for used in (f.path for f in fetched):
            ctx.store.check_intact(used)
    report: list[VerifyReport] = []

    def produce(out: Path) -> None:
        ctx.on_step(f"assembling {path.name} offline")
        built = assemble.assemble(inputs, out, logical=ctx.store.logical(path),
                                  runner=ctx.sandbox,
                                  wheel_cache=partial(cached_wheel, ctx, need_deps,
                                                      used=wheels),
                                  on_step=ctx.on_step)
        ctx.on_step("verifying the closure (imports, commands, dynamic loader)")
        # Traced once: what the checks open joins the runtime closure (oci/runtime.py).
        with ctx.store.scratch() as scratch:
            tracer = trace.Tracer.prepare(scratch)
            report.append(verify.verify(rec, out, logical=built.layout.logical,
                                        site_packages=built.layout.site_packages,
                                        values=built.values, runner=ctx.sandbox,
                                        spec=built.spec, jobs=ctx.jobs, on_step=ctx.on_step,
                                        tracer=tracer))
            if tracer is not None:
                trace.write_record(out, tracer.opened())

    wheels: list[StorePath] = []

    def build_inputs() -> list[StorePath]:
        """What a rebuild reads again, kept by gc while the closure is rooted."""
        toolchain_root = ctx.store.layout.as_store_path(tc.root)
        return [deps_result.path, *wheels, *([toolchain_root] if toolchain_root else [])]

    ctx.store.add(path, produce, references=[linked, *(f.path for f in fetched)],
                  build_inputs=build_inputs,
                  on_wait=lambda p: ctx.on_step(f"waiting for another venvseal building {p.name}"))
    if not report and (found is None or found.how == "valid"):
        ctx.store.check_intact(path)  # reused: refuse it if it was edited since
    if out_link is not None:
        ctx.store.add_root(out_link, path)
    return BuildResult(path=path, deps=realised[0] if realised else deps_result,
                       relinked=linked,
                       fetched=tuple(f.path for f in fetched),
                       reused=not report, verified=report[0] if report else None,
                       substituted=_substituted(
                           found.fetched if found else (), relinked.fetched,
                           *(r.fetched for r in sources),
                           *(r.fetched for r in realised or [deps_result])))


def _substituted(*groups: tuple[StorePath, ...]) -> tuple[StorePath, ...]:
    """The paths substituters gave, in the order they were fetched, each once."""
    return tuple(dict.fromkeys(p for group in groups for p in group))


def cached_wheel(ctx: Context, need_deps: Callable[[], StorePath], name: str, key: str,
                 build: Callable[[Path, Path], Path], *,
                 used: list[StorePath] | None = None) -> Path:
    """A project's wheel, kept in the store under ``key`` so an app edit does not rebuild
    the workspace members it did not touch. Never substituted: a local build is quicker
    than asking a cache for every member."""
    path = ctx.store.make_path(f"{name}-wheel", key)

    def produce(out: Path) -> None:
        # Building reads the deps path's build environment: it must be as sealed.
        deps_path = need_deps()
        ctx.store.check_intact(deps_path, within=deps.BUILD_ENV)
        ctx.on_step(f"building {name} into a wheel")
        out.mkdir()
        with ctx.store.scratch() as work:
            wheel = build(work, deps_path)
            os.rename(wheel, out / wheel.name)

    ctx.store.add(path, produce, inputs={"stage": "wheel", "key": key})
    if used is not None:
        used.append(path)  # the closure's build inputs
    found = list(path.glob("*.whl"))
    if len(found) != 1:  # a reused path someone changed (a deletion leaves no other mark)
        raise StoreError(f"{path} should hold one wheel and holds {len(found)}: it was "
                         "changed after it was made; run 'venvseal gc', which removes it "
                         "(no root keeps it), then build again")
    return found[0]
