"""What the assembly stage reads, digested into the key that names the closure's store path,
and the offline sandbox its steps run in."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from venvseal.assemble import sources
from venvseal.errors import EXIT_USAGE, VenvsealError
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock
from venvseal.store.core import STORE_DIR, StorePath
from venvseal.toolchain import sandbox
from venvseal.toolchain.resolve import ResolvedToolchain, uv_binary
from venvseal.toolchain.sandbox import Mount, SandboxSpec

STAGE_VERSION = "assemble-3"  # bump whenever the same inputs would give other bytes


class AssembleError(VenvsealError):
    """The closure cannot be assembled as the recipe says."""


class WorkspaceError(AssembleError):
    """``[assemble] workspace`` names a project the assembly cannot install (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, rec: Recipe, unknown: Sequence[str], lock: Lock) -> None:
        self.where = f"{rec.file}: {rec.key_prefix}assemble.workspace"
        self.unknown = tuple(unknown)
        self.installable = tuple(sorted(m.name for m in lock.installed_members()))
        root = lock.root_package()
        self.virtual_root = root.name if root is not None and root.source_kind == "virtual" \
            else None
        super().__init__(str(self))

    def __str__(self) -> str:
        names = ", ".join(self.installable) or "none"
        why = (f" ({self.virtual_root} is the root project, which uv does not install: it has "
               "no [build-system], or tool.uv.package is false)"
               if self.virtual_root in self.unknown else "")
        return (f"{self.where} names {', '.join(self.unknown)}, not a package of the uv "
                f"workspace{why}; the packages it can install are: {names}; fix the list")


@dataclass(frozen=True, kw_only=True, slots=True)
class Fetched:
    """A realised [[fetch]] source: its name, store path and logical path."""

    name: str
    path: StorePath
    logical: PurePosixPath
    install: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class AssembleInputs:
    """Everything the closure depends on; ``fingerprint`` names its store path."""

    recipe: Recipe
    toolchain: ResolvedToolchain
    deps: StorePath  # for its build environment
    relinked: StorePath  # what the closure links to
    fetched: tuple[Fetched, ...]
    members: tuple[tuple[str, str], ...]  # (name, folder relative to the project)
    sources: tuple[tuple[str, str], ...]  # (what, digest) of every project input used

    def fingerprint(self) -> str:
        doc = {
            "stage": STAGE_VERSION,
            "recipe": self.recipe.canonical("app", "assemble", "substitute", "verify"),
            "toolchain": [self.toolchain.identity, str(self.toolchain.python),
                          [str(d) for d in self.toolchain.library_dirs],
                          [str(p) for p in self.toolchain.path], self.toolchain.uv_version],
            "deps": self.deps.name,
            "relinked": self.relinked.name,
            "fetched": [(f.name, f.path.name, f.install) for f in self.fetched],
            "members": self.members,
            "sources": self.sources,
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def collect_inputs(rec: Recipe, tc: ResolvedToolchain, deps: StorePath, linked: StorePath,
                   fetched: tuple[Fetched, ...], lock: Lock) -> AssembleInputs:
    """Digest every project file the stage reads: members, copy sources and patch files."""
    wanted = rec.assemble.workspace
    installable = lock.installed_members()
    members = tuple(sorted((m.name, m.source or ".") for m in installable
                           if wanted is None or m.name in wanted))
    if wanted is not None and (unknown := set(wanted) - {name for name, _ in members}):
        raise WorkspaceError(rec, sorted(unknown), lock)
    # Absolute symlinks are left out, as wheels.build_wheel leaves them: they cannot resolve
    # in the sandbox, and an out-link in the root project (result -> the closure) would
    # otherwise change the closure's key at every build.
    digests = [(f"member:{name}", sources.tree_digest(
        sources.inside(rec.project, rel, what=f"workspace member {name}"),
        absolute_links=False)) for name, rel in members]
    for i, rule in enumerate(rec.assemble.copy):
        if rule.from_.startswith("@"):
            continue  # from a fetched source: keyed by that store path
        path = sources.inside(rec.project, rule.from_,
                              what=f"{rec.key_prefix}assemble.copy[{i}].from")
        digests.append((f"copy:{i}", sources.tree_digest(path, rule.exclude)))
    for i, sub in enumerate(rec.substitute):
        if sub.patch is not None:
            path = sources.inside(rec.base, os.path.relpath(sub.patch, rec.base),
                                  what=f"{rec.key_prefix}substitute[{i}].patch")
            digests.append((f"patch:{i}", sources.tree_digest(path)))
    return AssembleInputs(recipe=rec, toolchain=tc, deps=deps, relinked=linked,
                          fetched=fetched, members=members, sources=tuple(digests))


def offline_spec(inputs: AssembleInputs) -> SandboxSpec:
    """The sandbox of the stage's steps: the toolchain's root, no network, uv, the relinked
    deps and the fetched paths at their logical paths (the assembly adds the closure)."""
    env = sandbox.fixed_env(inputs.toolchain.path)
    env.update({"VENVSEAL_PYTHON": str(inputs.toolchain.python),
                "UV_NO_CACHE": "1", "UV_OFFLINE": "1", "UV_LINK_MODE": "copy",
                "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"})
    mounts = [Mount(host=inputs.relinked, target=STORE_DIR / inputs.relinked.name),
              Mount(host=uv_binary(), target=sandbox.TOOLS_DIR / "uv")]
    mounts += [Mount(host=f.path, target=f.logical) for f in inputs.fetched]
    return SandboxSpec(root=inputs.toolchain.root, mounts=tuple(mounts), env=env,
                       network=False, cwd=sandbox.BUILD_ROOT)
