"""Which local packages the assembly installs, and a wrong ``[assemble] workspace`` name
(fast: the check runs before anything is built)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import PYTHON, fixture_text, write

from venvseal.assemble.stage import WorkspaceError, collect_inputs
from venvseal.errors import EXIT_USAGE
from venvseal.recipe.files import load_recipe
from venvseal.recipe.uvlock import read_lock

LOCK = fixture_text("uvlock/members.lock")


def project(tmp_path: Path, root_kind: str, workspace: str) -> Path:
    write(tmp_path / "uv.lock", LOCK.format(root=root_kind))
    write(tmp_path / "packages/member/pyproject.toml", '[project]\nname = "member"\n')
    write(tmp_path / "venvseal.toml", f'[app]\nname = "site"\nversion = "1"\n\n[toolchain]\n'
          f'python = "{PYTHON}"\n\n[assemble]\nworkspace = {workspace}\n')
    return tmp_path


@pytest.mark.parametrize(("root_kind", "workspace", "fragments"), [
    ("editable", '["sight"]', ["assemble.workspace names sight, not a package of the uv "
                               "workspace; the packages it can install are: member, site"]),
    ("virtual", '["site"]', ["names site, not a package of the uv workspace (site is the root "
                             "project, which uv does not install: it has no [build-system], or "
                             "tool.uv.package is false)", "can install are: member; fix"]),
])
def test_a_name_that_is_no_installable_package_is_a_recipe_error(
        tmp_path: Path, root_kind: str, workspace: str, fragments: list[str]) -> None:
    folder = project(tmp_path, root_kind, workspace)
    rec = load_recipe(folder)
    with pytest.raises(WorkspaceError) as info:
        collect_inputs(rec, None, None, None, (), read_lock(folder))  # type: ignore[arg-type]
    assert info.value.exit_code == EXIT_USAGE
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(("root_kind", "workspace", "members"), [
    ("editable", '["site", "member"]', (("member", "packages/member"), ("site", "."))),
    ("editable", '["site"]', (("site", "."),)),
    ("virtual", '["member"]', (("member", "packages/member"),)),
])
def test_the_root_is_a_member_when_uv_makes_it_a_package(
        tmp_path: Path, root_kind: str, workspace: str,
        members: tuple[tuple[str, str], ...]) -> None:
    folder = project(tmp_path, root_kind, workspace)
    inputs = collect_inputs(load_recipe(folder), None, None, None, (),  # type: ignore[arg-type]
                            read_lock(folder))
    assert inputs.members == members
