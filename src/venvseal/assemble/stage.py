"""The offline assembly stage: the pinned venv becomes a runnable, complete closure.

Runs without network. The closure is built in a temporary folder that the sandbox mounts at
the closure's final logical path (``/venvseal/store/<hash>-<name>``), so everything that
embeds a path (scripts, substitutions) embeds the one it will run at. The dependencies are
not copied in: the closure is a forest of links into the relinked deps path (forest.py,
relinked.py), and holds as its own only what it adds or changes. The local projects come in
as finished wheels (projects.py plans them; the caller builds or reuses each beforehand).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from venvseal.assemble import commands, entrypoints, pythonpath, relinked, sources, wheels
from venvseal.assemble import textedit as substitute
from venvseal.assemble.forest import Forest
from venvseal.assemble.inputs import (
    STAGE_VERSION,
    AssembleError,
    AssembleInputs,
    Fetched,
    WorkspaceError,
    collect_inputs,
    offline_spec,
)
from venvseal.assemble.projects import ProjectWheel
from venvseal.assemble.wheels import dist_info_owners
from venvseal.deps.normalise import PYTHON_HOME_PLACEHOLDER, remove_build_litter
from venvseal.deps.records import update_records
from venvseal.toolchain import sandbox
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

__all__ = ["STAGE_VERSION", "AssembleError", "AssembleInputs", "Assembled", "Fetched", "Layout",
           "WorkspaceError", "assemble", "collect_inputs"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Where things are in the closure, on the host and as the closure sees itself."""

    out: Path  # host folder being built
    logical: PurePosixPath  # the closure's path at run time
    python_version: str  # "3.11"
    forest: Forest  # the links into the relinked deps; every edit goes through it

    @property
    def site_packages(self) -> str:
        return f"lib/python{self.python_version}/site-packages"

    def placeholders(self, fetched: tuple[Fetched, ...]) -> dict[str, str]:
        values = {"out": str(self.logical), "python": str(self.logical / "bin" / "python"),
                  "site-packages": str(self.logical / self.site_packages)}
        values.update({f.name: str(f.logical) for f in fetched})
        return values


def plant(linked: Path, out: Path) -> Forest:
    """Create ``out`` as a forest of links into the relinked deps ``linked``."""
    out.mkdir()
    forest = Forest(out, linked)
    forest.plant()
    return forest


def python_version(out: Path) -> str:
    """X.Y of the venv's interpreter, from pyvenv.cfg's version_info."""
    for line in (out / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "version_info":
            return ".".join(value.strip().split(".")[:2])
    raise AssembleError(f"{out / 'pyvenv.cfg'} has no version_info; rebuild the deps stage")


def restore_venv(layout: Layout, python: PurePosixPath) -> None:
    """pyvenv.cfg with the interpreter's folder, and bin/python{,3,3.X} -> the interpreter."""
    cfg = layout.forest.own_file(layout.out / "pyvenv.cfg")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(PYTHON_HOME_PLACEHOLDER,
                                                           str(python.parent)),
                   encoding="utf-8")
    python_links(layout, python)


def python_links(layout: Layout, python: PurePosixPath) -> None:
    """bin/python, bin/python3 and bin/python3.X -> the toolchain's interpreter."""
    bin_dir = layout.forest.own_dir(layout.out / "bin")
    for name in ("python", "python3", f"python{layout.python_version}"):
        os.symlink(str(python), bin_dir / name)


def _spec(inputs: AssembleInputs, layout: Layout) -> SandboxSpec:
    """The stage's offline sandbox, with the closure being built at its logical path."""
    spec = offline_spec(inputs)
    closure = Mount(host=layout.out, target=layout.logical, writable=True)
    return replace(spec, mounts=(closure, *spec.mounts))


@dataclass(frozen=True)
class Installed:
    """What installing the projects' wheels left: every file's owner (file -> dist-info)
    and the ``bin/`` files the wheels ship as they are."""

    owners: dict[str, str]
    shipped: frozenset[Path]


def install_projects(inputs: AssembleInputs, layout: Layout, owners: Mapping[str, str],
                     built: Sequence[ProjectWheel], *, runner: Sandbox,
                     spec: SandboxSpec) -> Installed:
    """Install the members' and installable fetches' finished wheels offline, without
    deps: ``owners`` (file -> dist-info) with their files added, and the ``bin/`` files
    their wheels ship as they are (``.data/scripts``)."""
    owners = dict(owners)
    if not built:
        return Installed(owners, frozenset())
    site = layout.out / layout.site_packages
    before = set(site.glob("*.dist-info"))
    scripts: list[Path] = []
    for project in built:
        wheels.check_conflicts(project.wheel, owners)
        for dest in wheels.wheel_destinations(project.wheel, layout.site_packages):
            layout.forest.own_dir((layout.out / dest).parent)  # uv writes there
            if dest.startswith("bin/"):
                scripts.append(layout.out / dest)
        dist_info, files = wheels.wheel_files(project.wheel)
        owners.update(dict.fromkeys(files, dist_info))  # two projects may clash, too
    # One uv call for all: each call reads every installed distribution first.
    mounts = [Mount(host=p.wheel.parent, target=sandbox.BUILD_ROOT / f"wheels-{i}")
              for i, p in enumerate(built)]
    inner = [str(sandbox.BUILD_ROOT / f"wheels-{i}" / p.wheel.name) for i, p in enumerate(built)]
    job = SandboxSpec(root=spec.root, env=spec.env, network=False, cwd=spec.cwd,
                      mounts=(*spec.mounts, *mounts))
    runner.run(job, ["uv", "pip", "install", "--no-deps", "--no-index", "--python",
                     str(layout.logical / "bin" / "python"), *inner],
               what="installing " + ", ".join(p.label for p in built))
    removed = set()
    for new in sorted(set(site.glob("*.dist-info")) - before):
        direct_url = new / "direct_url.json"
        if direct_url.exists():  # names the wheel's temporary build path (PEP 610)
            direct_url.unlink()
            removed.add(direct_url)
    # uv's per-run files (.lock, uv_cache.json with a time stamp) and the launchers it
    # wrote go (write_entry_points makes them again); what a wheel ships in bin/ (a
    # program maturin built from Rust, a shell script) is put back as it was installed.
    kept = {p: (p.read_bytes(), os.access(p, os.X_OK)) for p in scripts if p.is_file()}
    update_records(layout.out, removed | (remove_build_litter(layout.out) - kept.keys()), ())
    python_links(layout, inputs.toolchain.python)
    for path, (data, executable) in kept.items():
        path.write_bytes(data)
        os.chmod(path, 0o755 if executable else 0o644)
    return Installed(owners, frozenset(kept))


def copy_sources(inputs: AssembleInputs, layout: Layout, owners: Mapping[str, str]) -> None:
    """The recipe's copy rules and top-level links."""
    rec = inputs.recipe
    fetched = {f.name: f.path for f in inputs.fetched}
    for i, rule in enumerate(rec.assemble.copy):
        where = f"{rec.key_prefix}assemble.copy[{i}]"
        if rule.from_.startswith("@"):
            name, _, rest = rule.from_[1:].partition("@")
            base = Path(fetched[name])
            source = sources.inside(base, rest.lstrip("/") or ".", what=f"{where}.from")
        else:
            base = rec.project
            source = sources.inside(base, rule.from_, what=f"{where}.from")
        dest = layout.out / rule.to.replace("@site-packages@", layout.site_packages)
        for written in sources.copy_tree(source, dest, rule.exclude, within=base,
                                         make_dir=layout.forest.own_dir):
            rel = os.path.relpath(written, layout.out / layout.site_packages)
            if rel in owners:
                owner = wheels.dist_name(owners[rel])
                raise AssembleError(f"{where}: copying {rule.from_} to {rule.to} would "
                                    f"overwrite {rel}, installed by {owner}; "
                                    "choose another destination")
    for name, target in sorted(rec.assemble.links.items()):
        link = layout.out / name
        if os.path.lexists(link):
            raise AssembleError(f"{rec.key_prefix}assemble.links.{name}: {name} exists in the "
                                "closure already; choose another name")
        os.symlink(target.replace("@site-packages@", layout.site_packages), link)


def write_entry_points(layout: Layout, keep: frozenset[Path] = frozenset()) -> list[Path]:
    """Regenerate bin/ scripts for every console and gui script of every distribution
    (``keep``: files a local package's wheel shipped there). What the dependencies' wheels
    shipped there is linked back from the deps path, a ``#!python`` shebang made the
    closure's python."""
    python = str(layout.logical / "bin" / "python")
    shipped, edited = entrypoints.link_shipped(layout.forest, python)
    keep = keep | shipped
    bin_dir = layout.out / "bin"
    for entry in sorted(bin_dir.iterdir()):
        if not entry.name.startswith("python") and entry not in keep:
            entry.unlink()
    points = entrypoints.read_entry_points(layout.out / layout.site_packages)
    return [*entrypoints.write_scripts(bin_dir, points, python=python), *edited]


def own_records(layout: Layout, changed: set[Path], owners: Mapping[str, str]) -> None:
    """Make the RECORD of every distribution owning a changed file the closure's own, so
    update_records can rewrite it (it leaves linked ones alone)."""
    site = layout.out / layout.site_packages
    for path in changed:
        rel = os.path.relpath(path, site)
        if rel in owners:
            layout.forest.own_file(site / owners[rel] / "RECORD")


def compile_bytecode(inputs: AssembleInputs, layout: Layout, *, runner: Sandbox,
                     spec: SandboxSpec) -> None:
    """Compile the closure's own modules (the linked ones have theirs in the deps path)."""
    site = layout.out / layout.site_packages
    for folder, dirs, files in os.walk(site):  # symlinked folders are not entered
        if "__pycache__" in dirs and any(f.endswith(".py") and not os.path.islink(
                os.path.join(folder, f)) for f in files):
            layout.forest.own_dir(Path(folder) / "__pycache__")
    relinked.compile_bytecode([layout.logical / layout.site_packages],
                              python=inputs.toolchain.python, what=layout.logical.name,
                              runner=runner, spec=spec)


@dataclass(frozen=True, kw_only=True, slots=True)
class Assembled:
    """A closure built in a temporary folder, with what its checks need to run it."""

    layout: Layout
    spec: SandboxSpec  # the sandbox that sees the closure at its logical path
    values: dict[str, str]  # placeholder values


def assemble(inputs: AssembleInputs, out: Path, *, wheels: Sequence[ProjectWheel],
             logical: PurePosixPath, runner: Sandbox,
             on_step: Callable[[str], None] = lambda _msg: None) -> Assembled:
    """Build the closure into ``out`` (created here), to run at ``logical``, installing
    ``wheels``: the finished wheels of the projects projects.plan_wheels planned."""
    forest = plant(inputs.relinked, out)
    layout = Layout(out=out, logical=logical, python_version=python_version(out),
                    forest=forest)
    forest.own_dir(out / layout.site_packages)
    restore_venv(layout, inputs.toolchain.python)
    spec = _spec(inputs, layout)
    # Which dist-info lists each file, read once (authentik: 348 RECORDs through the links).
    installed = install_projects(inputs, layout, dist_info_owners(out / layout.site_packages),
                                 wheels, runner=runner, spec=spec)
    owners, shipped = installed.owners, installed.shipped
    copy_sources(inputs, layout, owners)
    pythonpath.write(inputs.recipe, layout.out, logical=layout.logical,
                     site_packages=layout.site_packages, closure=forest)
    changed = set(write_entry_points(layout, shipped))
    values = layout.placeholders(inputs.fetched)
    changed |= substitute.apply_all(inputs.recipe, out, values, layout.site_packages,
                                    closure=forest)
    changed |= relinked.relink(out, inputs.toolchain, inputs.recipe.assemble.ignore_missing,
                               edit=forest.own_file)
    own_records(layout, changed, owners)
    update_records(out, (), changed)
    # After every file of the recipe is in place; before bytecode, so what they write is
    # compiled too, and before the checks.
    commands.run_steps(inputs.recipe.assemble.run, key_prefix=inputs.recipe.key_prefix,
                       logical=logical, runner=runner, spec=spec, values=values,
                       on_step=on_step)
    compile_bytecode(inputs, layout, runner=runner, spec=spec)
    return Assembled(layout=layout, spec=spec, values=values)
