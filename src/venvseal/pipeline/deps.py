"""The deps stage in the store: reused when its inputs match, else built and pinned by its
declared hash; ``venvseal check`` builds it twice and compares."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal.deps import pinlock
from venvseal.deps import stage as deps
from venvseal.deps.diagnose import DiskFullError
from venvseal.hashes import Sha256
from venvseal.recipe import files
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock
from venvseal.store import fixed as fixed_output
from venvseal.store.core import (
    StoreFullError,
    StorePath,
    UndeclaredHashError,
)
from venvseal.toolchain import resolve as toolchain

if TYPE_CHECKING:  # these pull in pyelftools, needed only when building or comparing
    from venvseal.deps.normalise import NormaliseReport
    from venvseal.deps.treediff import Difference


from venvseal.pipeline.context import Context
from venvseal.pipeline.toolchains import resolve_toolchain


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


@dataclass(eq=False)
class DepsHandle:
    """The deps stage's path for a build, named before the store may hold it.

    A deferred path (named by its declared hash, see :func:`run_deps`) is realised, fetched
    or built, only when a later stage must read its files: the relinked deps or a project's
    wheel are to be made. :meth:`path` realises it then, at most once; a build whose later
    stages are all reused never does.
    """

    named: DepsResult  # from run_deps(defer=True); its path names the later stages' keys
    realise: Callable[[], DepsResult]  # fetch or build it: run_deps without defer
    _realised: DepsResult | None = field(default=None, init=False, repr=False)

    def path(self) -> StorePath:
        """The deps path, in the store: realised now if it was deferred and is not yet."""
        if self.named.deferred and self._realised is None:
            self._realised = self.realise()
        return self.named.path

    @property
    def result(self) -> DepsResult:
        """How the deps path was obtained: as :meth:`path` realised it, else as named."""
        return self._realised or self.named


def deps_name(rec: Recipe) -> str:
    return f"{rec.app.name}-deps"


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


def deps_handle(rec: Recipe, ctx: Context, *, tc: toolchain.ResolvedToolchain, lock: Lock,
                update_hash: bool = False, update_on_drift: bool = False) -> DepsHandle:
    """The deps stage for a build: reused or pinned now, or named and realised when read.

    The path is not checked for edits here; each stage that reads it checks it (a reused
    closure is checked itself).
    """
    named = run_deps(rec, ctx, update_hash=update_hash, tc=tc, check=False, lock=lock,
                     defer=True, update_on_drift=update_on_drift)
    return DepsHandle(named, partial(run_deps, rec, ctx, update_hash=update_hash, tc=tc,
                                     check=False, lock=lock))


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
                                   runner=ctx.sandbox, network=ctx.network,
                                   on_progress=ctx.on_step)
        except DiskFullError as err:  # the store's own message, naming its root
            raise StoreFullError(ctx.store.root, deps_name(rec)) from err

    # uv sync keeps this thread waiting on the sandbox, not the CPU: what needs no venv runs
    # meanwhile (the pins to record, from the toolchain's dpkg database, and loading the
    # normaliser's modules): 0.05-0.1 s of a warm demo stage (issue 16).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="venvseal-deps") as beside:
        beside.submit(importlib.import_module, "venvseal.deps.normalise")
        pins = beside.submit(pinlock.current, inputs) if update_hash else None
        built = fixed_output.build_fixed(
            ctx.store, _deps_output(rec, inputs, key, update_hash), build,
            on_hash=lambda: ctx.on_step("hashing the normalised venv"), hash_tree=deps.hash_venv)
    final, got = built.realised.path, built.realised.info.nar_hash
    ctx.store.record_output(key, final)
    result = _pinned(rec, inputs, final, got, reused=False, update_hash=update_hash,
                     pins=None if pins is None else pins.result())
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
            reused: bool, update_hash: bool,
            pins: pinlock.DepsPins | None = None) -> DepsResult:
    """The result; with ``update_hash``, the recipe's deps.hash and venvseal.lock written
    (``pins``: the current pins, if taken already)."""
    updated = update_hash and rec.deps.hash != got
    if updated:
        files.update_deps_hash(rec.file, rec.key_prefix, got.sri)
    written = pinlock.record(inputs, got, pins=pins) if update_hash else None
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
        report = deps.build_venv(inputs, out, uv_cache=work / "uv-cache", scratch=work,
                                 runner=ctx.sandbox, network=ctx.network)
        second = deps.hash_venv(out, report, None)[0].hash
        differences = () if second == first.hash else tuple(compare_trees(first.path, out))
    return CheckResult(first=first.hash, second=second, differences=differences)


