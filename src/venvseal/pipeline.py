"""The orchestrator: the stages in order, each reused from the store when its inputs match.

Reads like the pipeline and never touches the file system itself: stages build, the store
writes, and the caller (the CLI) supplies the side effects through :class:`Context`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal.deps import pinlock
from venvseal.deps import stage as deps
from venvseal.deps.diagnose import DiskFullError
from venvseal.errors import StoreError
from venvseal.hashes import Sha256
from venvseal.recipe import files
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock, read_lock
from venvseal.store import fixed as fixed_output
from venvseal.store.core import (
    Realised,
    Store,
    StoreFullError,
    StorePath,
    UndeclaredHashError,
)
from venvseal.store.nar import nar_hash
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.sandbox import Sandbox

if TYPE_CHECKING:  # these pull in pyelftools, needed only when building or comparing
    from venvseal.assemble.verify import VerifyReport
    from venvseal.deps.normalise import NormaliseReport
    from venvseal.deps.treediff import Difference


@dataclass(frozen=True, kw_only=True)
class Context:
    """The side effects a pipeline run may use, chosen by the caller."""

    store: Store
    sandbox: Sandbox
    uv_cache: Path
    network: deps.Network
    network_env: Mapping[str, str] = field(default_factory=dict)  # proxies, CA file for git
    on_step: Callable[[str], None] = field(default=lambda _msg: None)
    jobs: int = 1  # checks run side by side (never changes what is built)
    debian_mirror: str | None = None  # where pinned .debs are downloaded (default: apt's)


@dataclass(frozen=True, kw_only=True, slots=True)
class DepsResult:
    """The deps stage's store path and how it was obtained."""

    path: StorePath
    hash: Sha256
    reused: bool
    hash_updated: bool = False
    report: NormaliseReport | None = None
    deferred: bool = False  # named by its declared hash, not (yet) in the store
    fetched: tuple[StorePath, ...] = ()  # paths a substituter gave
    lock_file: Path | None = None  # venvseal.lock, when --update-hash wrote it
    drift: tuple[str, ...] = ()  # how the toolchain moved, when that re-declared the hash


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckResult:
    """Two independent builds of the deps stage, compared."""

    first: Sha256
    second: Sha256
    differences: tuple[Difference, ...]

    @property
    def ok(self) -> bool:
        return self.first == self.second


def deps_name(rec: Recipe) -> str:
    return f"{rec.app.name}-deps"


def resolve_toolchain(rec: Recipe, ctx: Context) -> toolchain.ResolvedToolchain:
    """The recipe's toolchain, its Debian root file system made first if it names one.

    A Debian root pinned in ``venvseal.lock`` is made from exactly the pinned ``.deb`` files;
    an unpinned one from today's mirror with debootstrap.
    """
    spec = rec.toolchain.debian
    if spec is None:
        return toolchain.resolve(rec.toolchain)
    from venvseal.toolchain import debian, debpin, debroot

    lock_file = debpin.lock_path(rec.file)
    pin = debpin.read_pin(lock_file)
    if pin is None:
        root = debian.realise(spec, ctx.store, on_step=ctx.on_step)
    elif not pin.fits(spec):
        raise debpin.PinError(f"{lock_file}: [debian]", "was locked for another suite, variant "
                              "or package list than the recipe's [toolchain] debian",
                              "run 'venvseal toolchain --update-lock' to pin it again")
    else:
        root = debroot.realise_root(spec, pin, ctx.store, on_step=ctx.on_step,
                                    mirror=ctx.debian_mirror or debian.apt_mirror())
    return toolchain.resolve(rec.toolchain, root=root)


def toolchain_paths(rec: Recipe, store: Store, tc: toolchain.ResolvedToolchain
                    ) -> list[StorePath]:
    """The store paths a Debian toolchain is made of: its root, and its pinned ``.deb``s."""
    if rec.toolchain.debian is None:
        return []
    from venvseal.toolchain import debpin, debroot

    paths = [store.parse_path(str(tc.root))]
    pin = debpin.read_pin(debpin.lock_path(rec.file))
    if pin is not None and store.is_valid(debroot.debs_path(pin, store)):
        paths.append(debroot.debs_path(pin, store))
    return paths


def lock_toolchain(rec: Recipe, ctx: Context) -> toolchain.ResolvedToolchain:
    """Pin the recipe's Debian root to today's packages (``venvseal.lock``), then make it."""
    from venvseal.toolchain import debian, debpin, debroot

    spec = rec.toolchain.debian
    if spec is None:
        raise debpin.PinError(str(rec.file), "names no [toolchain] debian root to lock",
                              "a host or prepared root is pinned by its package database")
    mirror = ctx.debian_mirror or debian.apt_mirror()
    with ctx.store.scratch() as work:
        pin, debs = debroot.lock(spec, mirror=mirror, work=work, on_step=ctx.on_step)
        root = debroot.realise_root(spec, pin, ctx.store, on_step=ctx.on_step, mirror=mirror,
                                    local=debs)
    debpin.write_pin(debpin.lock_path(rec.file), pin)
    ctx.on_step(f"pinned {len(pin.debs)} packages in {debpin.lock_path(rec.file)}")
    return toolchain.resolve(rec.toolchain, root=root)


def run_deps(rec: Recipe, ctx: Context, *, update_hash: bool = False,
             tc: toolchain.ResolvedToolchain | None = None, check: bool = True,
             lock: Lock | None = None, defer: bool = False,
             update_on_drift: bool = False) -> DepsResult:
    """Realise the deps stage: reuse it when its inputs are unchanged, else build and pin.

    Concurrent runs with the same inputs build once: the others wait for the store's lock on
    the inputs, then reuse what the first one added. With ``defer``, a declared hash that
    this store has never seen is trusted for the path's name alone (``deferred``): the
    caller realises it only if a later stage needs its files, and a cache hit never does.
    With ``update_on_drift``, the hash is re-declared (as with ``update_hash``) only when the
    toolchain differs from the one venvseal.lock recorded (the result's ``drift`` says how).
    """
    inputs = deps.collect_inputs(rec, tc or resolve_toolchain(rec, ctx), lock=lock)
    drift = pinlock.drift(inputs) if update_on_drift and not update_hash else ()
    update_hash = update_hash or bool(drift)
    key = "deps-" + inputs.fingerprint()
    found = _reuse_deps(rec, ctx, inputs, key, update_hash=update_hash, check=check,
                        defer=defer)
    if found is None:
        waiting = f"waiting for another venvseal building the dependencies of {rec.app.name}"
        with ctx.store.exclusive(key, on_wait=lambda: ctx.on_step(waiting)):
            found = _reuse_deps(rec, ctx, inputs, key, update_hash=update_hash, check=check,
                                defer=False)
            if found is None:
                found = _build_deps(rec, ctx, inputs, key, update_hash=update_hash)
    return dataclasses.replace(found, drift=drift)


def _reuse_deps(rec: Recipe, ctx: Context, inputs: deps.DepsInputs, key: str, *,
                update_hash: bool, check: bool, defer: bool) -> DepsResult | None:
    """The stage's path if these inputs made it before, or a substituter has it.

    With ``check``, a path edited since it was sealed is refused (see Store.check_intact).
    """
    declared = rec.deps.hash
    cached = ctx.store.lookup_output(key)
    if cached is not None:
        info = ctx.store.pin(cached)  # a concurrent gc must not delete it from now on
        if info is not None and (declared == info.nar_hash or update_hash):
            if check:
                ctx.store.check_intact(cached)
            return _pinned(rec, inputs, cached, info.nar_hash, reused=True,
                           update_hash=update_hash)
        if info is not None:
            _refuse(rec, ctx, inputs, declared, info.nar_hash)
    if declared is not None and not update_hash:
        # A fixed output is named by its declared hash alone, so a substituter may have it
        # (built elsewhere from the same inputs, if the declared hash is kept up to date).
        fixed = ctx.store.make_fixed_path(deps_name(rec), declared)
        # (A valid fixed path that these inputs did not make is checked by building.)
        if not ctx.store.is_valid(fixed):
            if defer:
                return DepsResult(path=fixed, hash=declared, reused=True, deferred=True)
            out = _deps_output(rec, inputs, key, update_hash)
            found = fixed_output.try_declared(ctx.store, out)
            if found is not None:
                ctx.store.record_output(key, fixed)
                return DepsResult(path=fixed, hash=declared, reused=True, fetched=found.fetched)
    return None


def _deps_output(rec: Recipe, inputs: deps.DepsInputs, key: str,
                 update_hash: bool) -> fixed_output.FixedOutput:
    """The deps stage as a fixed output: named by the declared hash, refused unless equal
    (a mismatch says, from venvseal.lock, what moved since the hash was declared)."""
    return fixed_output.FixedOutput(
        name=deps_name(rec), declared=rec.deps.hash, accept_any=update_hash, tree="venv",
        inputs={"stage": "deps", "fingerprint": key},
        undeclared=lambda got: UndeclaredHashError(rec.file, f"{rec.key_prefix}deps.hash", got),
        mismatch=lambda path, declared, got: pinlock.mismatch(inputs, path, declared, got))


def _build_deps(rec: Recipe, ctx: Context, inputs: deps.DepsInputs, key: str, *,
                update_hash: bool) -> DepsResult:
    """Build the venv in scratch space, pin it against the declared hash, add it."""

    def build(out: Path, work: Path) -> NormaliseReport:
        out.mkdir()
        ctx.on_step(f"building the dependency venv of {rec.app.name} (uv sync in the sandbox)")
        try:
            return deps.build_venv(inputs, out, uv_cache=ctx.uv_cache, scratch=work,
                                   runner=ctx.sandbox, network=ctx.network)
        except DiskFullError as err:  # the store's own message, naming its root
            raise StoreFullError(ctx.store.root, deps_name(rec)) from err

    built = fixed_output.build_fixed(
        ctx.store, _deps_output(rec, inputs, key, update_hash), build,
        on_hash=lambda: ctx.on_step("hashing the normalised venv"))
    final, got = built.realised.path, built.realised.info.nar_hash
    ctx.store.record_output(key, final)
    result = _pinned(rec, inputs, final, got, reused=False, update_hash=update_hash)
    return dataclasses.replace(result, report=built.report)


def _refuse(rec: Recipe, ctx: Context, inputs: deps.DepsInputs, declared: Sha256 | None,
            got: Sha256) -> None:
    """Stop with the hash to declare and, from venvseal.lock, what changed since it was
    declared; the store stays as it was."""
    if declared is None:
        raise UndeclaredHashError(rec.file, f"{rec.key_prefix}deps.hash", got)
    raise pinlock.mismatch(inputs, ctx.store.make_fixed_path(deps_name(rec), declared),
                           declared, got)


def _pinned(rec: Recipe, inputs: deps.DepsInputs, path: StorePath, got: Sha256, *,
            reused: bool, update_hash: bool) -> DepsResult:
    """The result; with ``update_hash``, the recipe's deps.hash and venvseal.lock written."""
    updated = update_hash and rec.deps.hash != got
    if updated:
        files.update_deps_hash(rec.file, rec.key_prefix, got.sri)
    written = pinlock.record(inputs, got) if update_hash else None
    return DepsResult(path=path, hash=got, reused=reused, hash_updated=updated,
                      lock_file=written)


def check_deps(rec: Recipe, ctx: Context) -> CheckResult:
    """Build the deps stage again from a cold uv cache and compare with the pinned build."""
    from venvseal.deps.treediff import compare_trees

    first = run_deps(rec, ctx)
    inputs = deps.collect_inputs(rec, resolve_toolchain(rec, ctx))
    with ctx.store.scratch() as work:
        out = work / "venv"
        out.mkdir()
        ctx.on_step("rebuilding the dependency venv from a cold uv cache")
        deps.build_venv(inputs, out, uv_cache=work / "uv-cache", scratch=work,
                        runner=ctx.sandbox, network=ctx.network)
        second = nar_hash(out).hash
        differences = () if second == first.hash else tuple(compare_trees(first.path, out))
    return CheckResult(first=first.hash, second=second, differences=differences)


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
