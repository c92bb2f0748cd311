"""The stages after the deps, in order: the relinked deps, the fetches, then the closure
(the projects' wheels, the offline assembly and its checks), each reused from the store when
its inputs match. Every step returns what it made; the deps path is a handle, realised only
if a step must read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from venvseal.pipeline.context import Context
from venvseal.pipeline.deps import DepsHandle, DepsResult, deps_handle
from venvseal.pipeline.toolchains import resolve_toolchain
from venvseal.pipeline.wheels import realise_wheels, wheel_path
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import read_lock
from venvseal.store.core import Realised, StorePath, add_made
from venvseal.toolchain import resolve as toolchain

if TYPE_CHECKING:  # the assembly's modules load when a build runs (verify: pyelftools)
    from venvseal.assemble.inputs import AssembleInputs
    from venvseal.assemble.projects import WheelPlan
    from venvseal.assemble.verify import VerifyReport


def relinked_name(rec: Recipe) -> str:
    return f"{rec.app.name}-deps-relinked"


def run_relinked(rec: Recipe, ctx: Context, tc: toolchain.ResolvedToolchain,
                 deps: DepsHandle) -> Realised:
    """The deps venv relinked against ``tc`` and compiled (relinked.py): reused, fetched
    from a substituter, or made (from the deps path, realised first if it is not yet)."""
    from venvseal.assemble import relinked

    inputs = relinked.RelinkInputs(deps=deps.named.path, toolchain=tc,
                                   ignore_missing=tuple(rec.assemble.ignore_missing))
    fingerprint = inputs.fingerprint()
    path = ctx.store.make_path(relinked_name(rec), fingerprint)
    found = ctx.store.substitute(path)  # valid already, or fetched
    if found is not None:
        return found
    ctx.store.check_intact(deps.path())  # it is about to be read

    def produce(out: Path) -> None:
        ctx.on_step(f"relinking and compiling the dependencies of {rec.app.name} (once per "
                    "deps path and toolchain)")
        made = relinked.make(inputs, out, logical=ctx.store.logical(path), runner=ctx.sandbox)
        ctx.on_step(f"relinked deps: {made.elf_files} ELF files resolved by the dynamic loader "
                    f"({made.edited} relinked); {made.compiled} modules compiled, "
                    f"{made.not_compiled} files skipped as not Python for this interpreter")

    info = ctx.store.add(path, produce, build_inputs=[deps.named.path],
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
    """deps -> relinked deps -> fetches -> plan -> [wheels -> assembly -> verify] -> store
    (-> out-link); the bracketed steps run only when the closure is not in the store."""
    from venvseal.assemble.inputs import Fetched, collect_inputs
    from venvseal.assemble.projects import plan_wheels
    from venvseal.fetch import realise as fetch

    lock = read_lock(rec.project)  # read once: the deps and the assembly stage both use it
    tc = tc or resolve_toolchain(rec, ctx)
    deps = deps_handle(rec, ctx, tc=tc, lock=lock, update_hash=update_hash,
                       update_on_drift=update_on_drift)
    relinked = run_relinked(rec, ctx, tc, deps)
    sources = [fetch.realise_fetch(f, ctx.store, recipe_file=rec.file,
                                   key_prefix=rec.key_prefix, index=i,
                                   network_env=ctx.network_env)
               for i, f in enumerate(rec.fetch)]
    fetched = tuple(
        Fetched(name=f.name, path=r.path, logical=ctx.store.logical(r.path),
                         install=f.install)
        for f, r in zip(rec.fetch, sources, strict=True))
    inputs = collect_inputs(rec, tc, deps.named.path, relinked.path, fetched, lock)
    plans = plan_wheels(inputs)
    path = ctx.store.make_path(f"{rec.app.name}-{rec.app.version}", inputs.fingerprint())
    found = ctx.store.substitute(path)
    if found is None:  # neither valid nor fetched
        # The assembly copies from the fetched paths. It only links to the relinked deps:
        # a damaged one is repaired for every closure at once, and verify re-hashes it.
        for used in (f.path for f in fetched):
            ctx.store.check_intact(used)
    toolchain_root = ctx.store.layout.as_store_path(tc.root)
    _, verified = add_made(
        ctx.store, path, partial(_make_closure, ctx=ctx, inputs=inputs, deps=deps, plans=plans,
                                 logical=ctx.store.logical(path)),
        references=[relinked.path, *(f.path for f in fetched)],
        # What a rebuild reads again, kept by gc while the closure is rooted.
        build_inputs=[deps.named.path, *(wheel_path(ctx.store, p.name, p.key) for p in plans),
                      *([toolchain_root] if toolchain_root else [])],
        on_wait=lambda p: ctx.on_step(f"waiting for another venvseal building {p.name}"))
    if verified is None and (found is None or found.how == "valid"):
        ctx.store.check_intact(path)  # reused: refuse it if it was edited since
    if out_link is not None:
        ctx.store.add_root(out_link, path)
    return BuildResult(path=path, deps=deps.result, relinked=relinked.path,
                       fetched=tuple(f.path for f in fetched), reused=verified is None,
                       verified=verified,
                       substituted=_substituted(
                           found.fetched if found else (), relinked.fetched,
                           *(r.fetched for r in sources), deps.result.fetched))


def _make_closure(out: Path, *, ctx: Context, inputs: AssembleInputs, deps: DepsHandle,
                  plans: Sequence[WheelPlan], logical: PurePosixPath) -> VerifyReport:
    """Build the closure into ``out`` and check it: the planned wheels (reused or built),
    the offline assembly, then [verify], traced once (what the checks open joins the
    runtime closure, oci/runtime.py)."""
    from venvseal.assemble import stage as assemble
    from venvseal.assemble import verify
    from venvseal.toolchain import trace

    ctx.on_step(f"assembling {logical.name} offline")
    wheels = realise_wheels(ctx, deps, inputs, plans)
    built = assemble.assemble(inputs, out, wheels=wheels, logical=logical, runner=ctx.sandbox,
                              on_step=ctx.on_step)
    ctx.on_step("verifying the closure (imports, commands, dynamic loader)")
    with ctx.store.scratch() as scratch:
        tracer = trace.Tracer.prepare(scratch)
        report = verify.verify(inputs.recipe, out, logical=built.layout.logical,
                               site_packages=built.layout.site_packages, values=built.values,
                               runner=ctx.sandbox, spec=built.spec, jobs=ctx.jobs,
                               on_step=ctx.on_step, tracer=tracer)
        if tracer is not None:
            trace.write_record(out, tracer.opened())
    return report


def _substituted(*groups: tuple[StorePath, ...]) -> tuple[StorePath, ...]:
    """The paths substituters gave, in the order they were fetched, each once."""
    return tuple(dict.fromkeys(p for group in groups for p in group))
