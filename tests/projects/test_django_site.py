"""A ``package = false`` Django site, built as root and as a user (slow): ``[assemble]
python-path`` puts its ``src`` on sys.path and ``[[assemble.run]]`` runs ``collectstatic``
offline into the closure, whose recorded hash covers what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.django_site import CSS, write_site
from support.projects import Builder

pytestmark = pytest.mark.slow


def test_collectstatic_runs_into_the_closure_and_src_is_on_sys_path(builder: Builder) -> None:
    project, built = builder.place_and_build(write_site, "mysite")
    closure = Path(built.json()["path"])
    logical = f"/venvseal/store/{closure.name}"
    pth = closure / "lib/python3.11/site-packages/_venvseal_python_path.pth"
    assert pth.read_text() == f"{logical}/src\n"
    static = closure / "static"
    assert (static / "polls" / "style.css").read_text() == CSS
    admin_css = static / "admin" / "css" / "base.css"  # copied from the linked django
    assert admin_css.is_file() and not admin_css.is_symlink()
    assert not static.is_symlink()
    if builder.user is not None:  # what the command wrote is the user's, as the rest
        assert admin_css.stat().st_uid == static.stat().st_uid == builder.user.uid
    run = builder.venvseal("run", project, "--store", builder.store, "--uv-cache",
                           builder.uv_cache, "--", "@python@", "-c",
                           "import mysite.settings as s; print(s.STATIC_ROOT)")
    assert run.code == 0, run.err
    assert run.out.strip() == f"{logical}/static"
    # The files the command wrote are part of the closure's recorded hash.
    verify = builder.venvseal("--json", "verify", "--store", builder.store)
    assert verify.code == 0, verify.out
    assert verify.json()["changed"] == []
