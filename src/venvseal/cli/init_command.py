"""``venvseal init``: write a starter recipe, pin the deps hash, say what was chosen and why."""

from __future__ import annotations

from pathlib import Path

from venvseal import fsutil, pipeline, process
from venvseal.cli.session import Session
from venvseal.errors import EXIT_OK, RecipeError, UsageError
from venvseal.recipe import files, model
from venvseal.recipe.starter import HostPython, plan_starter
from venvseal.recipe.uvlock import read_lock

HOST_PYTHON = "/usr/bin/python3"


def host_python(path: str = HOST_PYTHON) -> HostPython | None:
    """The host's python3 and its version, or None if it has none that runs."""
    if not Path(path).exists():
        return None
    done = process.run([path, "-c", "import sys; print(*sys.version_info[:2])"],
                       what="the host's python3 version", check=False)
    parts = done.output.split()
    if done.returncode != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    real = str(Path(path).resolve())  # python3 -> python3.11: pin the minor version
    return HostPython(path=real if Path(real).name.startswith("python3") else path,
                      version=(int(parts[0]), int(parts[1])))


def _existing(project: Path) -> Path | None:
    if (project / model.RECIPE_FILE).is_file():
        return project / model.RECIPE_FILE
    try:
        return files.find_recipe(project)[0]
    except RecipeError:
        return None


def _write(project: Path, text: str, *, pyproject: bool, force: bool) -> Path:
    """Write the starter as venvseal.toml, or append it to pyproject.toml."""
    found = _existing(project)
    if found is not None and (not force or found.name == model.PYPROJECT_FILE):
        how = ("remove [tool.venvseal] from it first" if found.name == model.PYPROJECT_FILE
               else "pass --force to replace it")
        raise UsageError(f"{found} already holds a recipe; edit it, or {how}")
    if pyproject:
        target = project / model.PYPROJECT_FILE
        data = target.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + text
    else:
        target, data = project / model.RECIPE_FILE, text
    fsutil.write_atomic(target, data.encode(), temp=target.with_name(
        fsutil.temp_name(f".{target.name}")))
    return target


def run(s: Session) -> int:
    """Write the starter recipe for the project in ``DIR`` (default: here), then declare
    its deps hash unless ``--no-hash``."""
    project = (s.args.dir or s.cwd).absolute()
    if not (project / model.PYPROJECT_FILE).is_file():
        raise UsageError(f"{project} has no pyproject.toml; run venvseal init in your "
                         "project's folder (make one with 'uv init --package')")
    lock = read_lock(project)  # says to run 'uv lock' when there is none
    prefix = model.PYPROJECT_PREFIX if s.args.pyproject else ""
    starter = plan_starter(project, lock, host=host_python(), prefix=prefix)
    file = _write(project, starter.text, pyproject=s.args.pyproject, force=s.args.force)
    s.ui.info(f"wrote {file}:")
    for choice in starter.choices:
        s.ui.info(f"  {choice.what}: {choice.why}")
    data: dict[str, object] = {"recipe": str(file),
                               "choices": [{"what": c.what, "why": c.why}
                                           for c in starter.choices]}
    if s.args.no_hash:
        s.ui.info("deps.hash is empty: declare it with 'venvseal build --update-hash'")
    else:
        s.args.recipe = file
        s.ui.info("building the dependency stage once to declare its hash (uv sync, with "
                  "network, in the sandbox)")
        with s.open() as o:
            res = pipeline.run_deps(o.recipe, o.ctx, update_hash=True)
        s.ui.info(f"updated {file}: {prefix}deps.hash = \"{res.hash.sri}\" (declared by "
                  "init; a later change needs 'venvseal build --update-hash')")
        data["hash"] = res.hash.sri
    s.ui.info("next: venvseal build --out-link result")
    s.ui.result(data, str(file))
    return EXIT_OK
