"""The local projects the closure installs from wheels of its own, planned before assembling.

Workspace members, the root project (when uv installs it) and ``install = true`` fetches each
become a wheel. :func:`plan_wheels` says which, and names each wheel by a key of what it is
built from, so the caller (the pipeline) can keep every wheel as a store path and reuse it
when an app edit leaves its project alone; :func:`build_wheel` makes one offline. The
assembly then installs the finished wheels (stage.install_projects).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from venvseal.assemble import wheels
from venvseal.assemble.inputs import STAGE_VERSION, AssembleInputs, offline_spec
from venvseal.deps.stage import BUILD_ENV
from venvseal.toolchain import sandbox
from venvseal.toolchain.sandbox import Mount, Sandbox

DEPS_DIR = sandbox.BUILD_ROOT / "deps"  # where a wheel build sees the deps path


@dataclass(frozen=True, kw_only=True, slots=True)
class WheelPlan:
    """A project the closure installs from its own wheel, and the key naming that wheel."""

    name: str
    project: wheels.Project
    key: str  # see wheel_key


@dataclass(frozen=True, kw_only=True, slots=True)
class ProjectWheel:
    """A planned project's finished wheel, as the assembly installs it."""

    label: str  # for messages: 'workspace member demo-core'
    wheel: Path  # the .whl file


def wheel_key(inputs: AssembleInputs, source_digest: str) -> str:
    """What a project's wheel depends on: its source, the backends (in the deps path's
    build environment), the interpreter that runs them."""
    tc = inputs.toolchain
    doc = [STAGE_VERSION, source_digest, inputs.deps.name, tc.identity, str(tc.python)]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def plan_wheels(inputs: AssembleInputs) -> tuple[WheelPlan, ...]:
    """The projects to build into wheels, in install order: the members (by name), then the
    installable fetches (in recipe order). Reads nothing: the digests are the inputs'."""
    digests = dict(inputs.sources)
    members = [(wheels.Project(label=f"the root project {name}" if rel == "." else
                               f"workspace member {name}", source=inputs.recipe.project / rel),
                name, digests[f"member:{name}"]) for name, rel in inputs.members]
    fetches = [(wheels.Project(label=f"fetch {f.name}", source=f.path), f.name, f.path.name)
               for f in inputs.fetched if f.install]
    return tuple(WheelPlan(name=name, project=project, key=wheel_key(inputs, digest))
                 for project, name, digest in (*members, *fetches))


def build_wheel(plan: WheelPlan, work: Path, deps: Path, *, inputs: AssembleInputs,
                runner: Sandbox) -> Path:
    """Build ``plan``'s project in ``work``, offline, with the backends of the build
    environment of the deps path (``deps``: its host path); the wheel's host path."""
    spec = offline_spec(inputs)
    job = replace(spec, mounts=(*spec.mounts, Mount(host=deps, target=DEPS_DIR)))
    return wheels.build_wheel(plan.project, work, runner=runner, spec=job,
                              build_env=DEPS_DIR / BUILD_ENV)
