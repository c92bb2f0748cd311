"""The orchestrator: the stages in order, each reused from the store when its inputs match.

Reads like the pipeline and never touches the file system itself: stages build, the store
writes, and the caller (the CLI) supplies the side effects through :class:`Context`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal import deps, recipe, toolchain
from venvseal.errors import VenvsealError
from venvseal.hashes import Sha256
from venvseal.nar import nar_hash
from venvseal.recipe import Recipe
from venvseal.sandbox import Sandbox
from venvseal.store import HashMismatchError, Store, StorePath

if TYPE_CHECKING:  # both pull in pyelftools, needed only when building or comparing
    from venvseal.normalise import NormaliseReport
    from venvseal.treediff import Difference


class UndeclaredHashError(VenvsealError):
    """The recipe declares no deps hash; the stage was built and its hash is known now."""

    def __init__(self, recipe_file: Path, key: str, got: Sha256) -> None:
        self.recipe_file = recipe_file
        self.key = key
        self.got = got
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"{self.recipe_file}: {self.key} is not declared; declare it as\n"
                f'  hash = "{self.got.sri}"\n'
                "or rerun with --update-hash to write it into the recipe")


@dataclass(frozen=True, kw_only=True)
class Context:
    """The side effects a pipeline run may use, chosen by the caller."""

    store: Store
    sandbox: Sandbox
    uv_cache: Path
    network: deps.Network
    on_step: Callable[[str], None] = field(default=lambda _msg: None)


@dataclass(frozen=True, kw_only=True, slots=True)
class DepsResult:
    """The deps stage's store path and how it was obtained."""

    path: StorePath
    hash: Sha256
    reused: bool
    hash_updated: bool = False
    report: NormaliseReport | None = None


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


def run_deps(rec: Recipe, ctx: Context, *, update_hash: bool = False) -> DepsResult:
    """Realise the deps stage: reuse it when its inputs are unchanged, else build and pin."""
    inputs = deps.collect_inputs(rec, toolchain.resolve(rec.toolchain))
    key = "deps-" + inputs.fingerprint()
    declared = rec.deps.hash
    cached = ctx.store.lookup_output(key)
    if cached is not None:
        info = ctx.store.query(cached)
        if info is not None and (declared == info.nar_hash or update_hash):
            return _pinned(rec, cached, info.nar_hash, reused=True, update_hash=update_hash)
        if info is not None:
            _refuse(rec, ctx, declared, info.nar_hash)
    with ctx.store.scratch() as work:
        out = work / "venv"
        out.mkdir()
        ctx.on_step(f"building the dependency venv of {rec.app.name} (uv sync in the sandbox)")
        report = deps.build_venv(inputs, out, uv_cache=ctx.uv_cache, scratch=work,
                                 runner=ctx.sandbox, network=ctx.network)
        ctx.on_step("hashing the normalised venv")
        got = nar_hash(out).hash
        if declared != got and not update_hash:
            _refuse(rec, ctx, declared, got)
        final = ctx.store.make_fixed_path(deps_name(rec), got)
        ctx.store.add(final, lambda dest: os.rename(out, dest), expected=got,
                      inputs={"stage": "deps", "fingerprint": key})
    ctx.store.record_output(key, final)
    result = _pinned(rec, final, got, reused=False, update_hash=update_hash)
    return DepsResult(path=result.path, hash=got, reused=False,
                      hash_updated=result.hash_updated, report=report)


def _refuse(rec: Recipe, ctx: Context, declared: Sha256 | None, got: Sha256) -> None:
    """Stop with the hash to declare; the store stays as it was."""
    if declared is None:
        raise UndeclaredHashError(rec.file, f"{rec.key_prefix}deps.hash", got)
    raise HashMismatchError(ctx.store.make_fixed_path(deps_name(rec), declared), declared, got)


def _pinned(rec: Recipe, path: StorePath, got: Sha256, *, reused: bool,
            update_hash: bool) -> DepsResult:
    updated = update_hash and rec.deps.hash != got
    if updated:
        recipe.update_deps_hash(rec.file, rec.key_prefix, got.sri)
    return DepsResult(path=path, hash=got, reused=reused, hash_updated=updated)


def check_deps(rec: Recipe, ctx: Context) -> CheckResult:
    """Build the deps stage again from a cold uv cache and compare with the pinned build."""
    from venvseal.treediff import compare_trees

    first = run_deps(rec, ctx)
    inputs = deps.collect_inputs(rec, toolchain.resolve(rec.toolchain))
    with ctx.store.scratch() as work:
        out = work / "venv"
        out.mkdir()
        ctx.on_step("rebuilding the dependency venv from a cold uv cache")
        deps.build_venv(inputs, out, uv_cache=work / "uv-cache", scratch=work,
                        runner=ctx.sandbox, network=ctx.network)
        second = nar_hash(out).hash
        differences = () if second == first.hash else tuple(compare_trees(first.path, out))
    return CheckResult(first=first.hash, second=second, differences=differences)
