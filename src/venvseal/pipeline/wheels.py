"""The local projects' wheels, each a store path: reused while its project is unchanged, so
an app edit does not rebuild the workspace members it did not touch."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal.deps.stage import BUILD_ENV
from venvseal.errors import StoreError
from venvseal.pipeline.context import Context
from venvseal.pipeline.deps import DepsHandle
from venvseal.store.core import Store, StorePath

if TYPE_CHECKING:  # the assembly's modules load only when a build runs
    from venvseal.assemble.inputs import AssembleInputs
    from venvseal.assemble.projects import ProjectWheel, WheelPlan


def wheel_path(store: Store, name: str, key: str) -> StorePath:
    """The store path of project ``name``'s wheel built from what ``key`` sums up."""
    return store.make_path(f"{name}-wheel", key)


def realise_wheel(ctx: Context, deps: DepsHandle, name: str, key: str,
                  build: Callable[[Path, Path], Path]) -> Path:
    """The wheel file of project ``name``, from the store path named by ``key``; made by
    ``build(work, deps)`` (``deps``: the deps path, realised only now) if the store has none.
    Never substituted: a local build is quicker than asking a cache for every member."""
    path = wheel_path(ctx.store, name, key)

    def produce(out: Path) -> None:
        # Building reads the deps path's build environment: it must be as sealed.
        deps_path = deps.path()
        ctx.store.check_intact(deps_path, within=BUILD_ENV)
        ctx.on_step(f"building {name} into a wheel")
        out.mkdir()
        with ctx.store.scratch() as work:
            wheel = build(work, deps_path)
            os.rename(wheel, out / wheel.name)

    ctx.store.add(path, produce, inputs={"stage": "wheel", "key": key})
    found = list(path.glob("*.whl"))
    if len(found) != 1:  # a reused path someone changed (a deletion leaves no other mark)
        raise StoreError(f"{path} should hold one wheel and holds {len(found)}: it was "
                         "changed after it was made; run 'venvseal gc', which removes it "
                         "(no root keeps it), then build again")
    return found[0]


def realise_wheels(ctx: Context, deps: DepsHandle, inputs: AssembleInputs,
                   plans: Sequence[WheelPlan]) -> tuple[ProjectWheel, ...]:
    """The finished wheel of every planned project, in plan order."""
    from venvseal.assemble.projects import ProjectWheel, build_wheel

    return tuple(
        ProjectWheel(label=plan.project.label,
                     wheel=realise_wheel(ctx, deps, plan.name, plan.key,
                                         partial(build_wheel, plan, inputs=inputs,
                                                 runner=ctx.sandbox)))
        for plan in plans)
