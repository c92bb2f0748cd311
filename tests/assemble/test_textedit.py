"""``[[substitute]]``: placeholders, literal replacements and unified diffs (real ``patch``).

Each test builds a miniature closure in tmp_path. A real closure links to the sealed
relinked deps path (forest.py), so editing goes through ``Forest.own_file``, which must
leave the deps path alone.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from support import write

from venvseal.assemble.forest import Forest
from venvseal.assemble.textedit import SubstituteError, apply_all, apply_patch, apply_text, expand
from venvseal.recipe.model import Substitute
from venvseal.recipe.parse import parse_recipe

SITE = "lib/python3.11/site-packages"
OUT = "/venvseal/store/abc-demo-1.0.0"
VALUES = {"out": OUT, "python": f"{OUT}/bin/python", "site-packages": f"{OUT}/{SITE}"}
SETTINGS = "import os\nBASE_DIR = os.getcwd()\nDATA = os.getcwd() + '/data'\n"


def text_sub(file: str, replace: str, with_: str, count: int | None = None) -> Substitute:
    return Substitute(kind="text", file=file, replace=replace, with_=with_, count=count)


def closure(tmp_path: Path) -> Path:
    out = tmp_path / "closure"
    write(out / SITE / "app" / "settings.py", SETTINGS)
    return out


def plain(out: Path) -> Forest:
    """A closure with nothing linked."""
    return Forest(out, out.parent / "nothing-linked")


class NoEdit(Forest):
    def own_file(self, path: Path) -> Path:
        raise AssertionError(f"{path} must not be edited")


def no_edit(out: Path) -> NoEdit:
    """A closure whose files must not be edited."""
    return NoEdit(out, out.parent / "nothing-linked")


# expand --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("@out@/share", "/venvseal/store/abc-demo-1.0.0/share"),
    ("@python@ -m app", "/venvseal/store/abc-demo-1.0.0/bin/python -m app"),
    ("@out@:@out@", "/venvseal/store/abc-demo-1.0.0:/venvseal/store/abc-demo-1.0.0"),
    ("user@example.org", "user@example.org"),  # not a placeholder: no closing @
    ("@unknown@ stays", "@unknown@ stays"),  # the recipe validator refuses these earlier
    ("", ""),
])
def test_expand(text: str, expected: str) -> None:
    assert expand(text, VALUES) == expected


def test_expand_site_packages_placeholder_with_a_dash() -> None:
    assert expand("@site-packages@/app", VALUES) == f"{VALUES['site-packages']}/app"


# apply_text ----------------------------------------------------------------------------------


def test_apply_text_replaces_every_occurrence_with_placeholders_expanded(tmp_path: Path) -> None:
    out = closure(tmp_path)
    sub = text_sub("@site-packages@/app/settings.py", "os.getcwd()", '"@out@"')
    changed = apply_text(sub, out, VALUES, SITE, where="substitute[0]", closure=plain(out))
    assert changed == out / SITE / "app" / "settings.py"
    assert changed.read_text() == SETTINGS.replace("os.getcwd()", f'"{VALUES["out"]}"')


def test_apply_text_with_the_expected_count(tmp_path: Path) -> None:
    out = closure(tmp_path)
    sub = text_sub("@site-packages@/app/settings.py", "os.getcwd()", "HERE", count=2)
    apply_text(sub, out, VALUES, SITE, where="substitute[0]", closure=plain(out))
    assert "os.getcwd()" not in (out / SITE / "app/settings.py").read_text()


def test_apply_text_keeps_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    out = tmp_path / "closure"
    (out / "data").mkdir(parents=True)
    (out / "data" / "blob").write_bytes(b"\xff\xfeKEY=old\x00\x80")
    sub = text_sub("data/blob", "old", "new")
    apply_text(sub, out, VALUES, SITE, where="substitute[0]", closure=plain(out))
    assert (out / "data" / "blob").read_bytes() == b"\xff\xfeKEY=new\x00\x80"


def test_count_mismatch_is_an_error_and_the_file_is_unchanged(tmp_path: Path) -> None:
    out = closure(tmp_path)
    sub = text_sub("@site-packages@/app/settings.py", "os.getcwd()", "HERE", count=1)
    with pytest.raises(SubstituteError) as info:
        apply_text(sub, out, VALUES, SITE, where="substitute[3]", closure=no_edit(out))
    message = str(info.value)
    assert message.startswith("substitute[3]: ")
    assert "occurs 2 times" in message
    assert "expects 1" in message
    assert "@site-packages@/app/settings.py" in message
    assert (out / SITE / "app/settings.py").read_text() == SETTINGS


def test_absent_text_is_an_error_naming_the_file_and_the_text(tmp_path: Path) -> None:
    out = closure(tmp_path)
    sub = text_sub("@site-packages@/app/settings.py", "BASE_DIR = Path(", "X")
    with pytest.raises(SubstituteError) as info:
        apply_text(sub, out, VALUES, SITE, where="substitute[1]", closure=no_edit(out))
    message = str(info.value)
    assert message.startswith("substitute[1]: ")
    assert "'BASE_DIR = Path(' not found in @site-packages@/app/settings.py" in message
    assert "update the recipe" in message


@pytest.mark.parametrize("rel", ["../outside.py", "@site-packages@/../../../../outside.py"])
def test_path_leaving_the_closure_is_refused(tmp_path: Path, rel: str) -> None:
    out = closure(tmp_path)
    outside = write(tmp_path / "outside.py", "os.getcwd()\n")
    sub = text_sub(rel, "os.getcwd()", "X")
    with pytest.raises(SubstituteError, match="leads outside the closure"):
        apply_text(sub, out, VALUES, SITE, where="substitute[0]", closure=no_edit(out))
    assert outside.read_text() == "os.getcwd()\n"


def test_symlink_leaving_the_closure_is_refused(tmp_path: Path) -> None:
    out = closure(tmp_path)
    outside = write(tmp_path / "host.cfg", "secret = 1\n")
    (out / "etc").mkdir()
    (out / "etc" / "app.cfg").symlink_to(outside)
    sub = text_sub("etc/app.cfg", "secret", "public")
    with pytest.raises(SubstituteError, match=r"etc/app\.cfg leads outside the closure"):
        apply_text(sub, out, VALUES, SITE, where="substitute[0]", closure=no_edit(out))
    assert outside.read_text() == "secret = 1\n"


@pytest.mark.parametrize("rel", ["@site-packages@/app/missing.py", "@site-packages@/app"])
def test_missing_file_is_an_error(tmp_path: Path, rel: str) -> None:
    out = closure(tmp_path)
    sub = text_sub(rel, "x", "y")
    with pytest.raises(SubstituteError) as info:
        apply_text(sub, out, VALUES, SITE, where="substitute[2]", closure=no_edit(out))
    message = str(info.value)
    assert message.startswith("substitute[2].file: ")
    assert f"{rel} is not a file in the closure" in message


def linked_closure(tmp_path: Path) -> tuple[Path, Forest]:
    """A sealed 'deps' file and a closure linking to it, as assemble.plant makes them."""
    deps = write(tmp_path / "deps" / SITE / "app" / "settings.py", SETTINGS)
    os.chmod(deps, 0o444)
    out = tmp_path / "closure"
    out.mkdir()
    forest = Forest(out, tmp_path / "deps")
    forest.plant()
    return deps, forest


def test_linked_file_is_not_modified_through_the_link(tmp_path: Path) -> None:
    deps, forest = linked_closure(tmp_path)
    out = forest.out
    sub = text_sub("@site-packages@/app/settings.py", "os.getcwd()", "HERE")
    edited = apply_text(sub, out, VALUES, SITE, where="substitute[0]", closure=forest)
    assert deps.read_text() == SETTINGS
    assert edited.read_text() == SETTINGS.replace("os.getcwd()", "HERE")
    assert not edited.is_symlink() and not edited.parent.is_symlink()
    assert (out / "lib").is_dir() and not (out / "lib").is_symlink()  # unfolded on the way
    assert os.stat(edited).st_ino != os.stat(deps).st_ino
    assert stat.S_IMODE(os.stat(deps).st_mode) == 0o444


# apply_patch ---------------------------------------------------------------------------------

PATCH = f"""\
--- a/{SITE}/app/settings.py
+++ b/{SITE}/app/settings.py
@@ -1,3 +1,3 @@
 import os
-BASE_DIR = os.getcwd()
+BASE_DIR = "/srv/app"
 DATA = os.getcwd() + '/data'
"""


def patch_sub(patch: Path, strip: int = 1) -> Substitute:
    return Substitute(kind="patch", patch=patch, strip=strip)


@pytest.fixture(autouse=False)
def patch_tool() -> str:
    found = shutil.which("patch")
    assert found is not None, ("the 'patch' program is missing: [[substitute]] patch files "
                               "need it (Debian: apt-get install patch; scripts/setup does)")
    return found


def test_apply_patch_applies_a_unified_diff(tmp_path: Path, patch_tool: str) -> None:
    out = closure(tmp_path)
    diff = write(tmp_path / "fix.diff", PATCH)
    changed = apply_patch(patch_sub(diff), out, where="substitute[0]", closure=plain(out))
    target = out / SITE / "app" / "settings.py"
    assert changed == {target}
    assert target.read_text() == SETTINGS.replace("BASE_DIR = os.getcwd()",
                                                  'BASE_DIR = "/srv/app"')
    assert sorted(p.name for p in target.parent.iterdir()) == ["settings.py"]  # no .orig


def test_apply_patch_with_strip_zero(tmp_path: Path, patch_tool: str) -> None:
    out = closure(tmp_path)
    diff = write(tmp_path / "fix.diff", PATCH.replace("a/lib", "lib").replace("b/lib", "lib"))
    apply_patch(patch_sub(diff, strip=0), out, where="substitute[0]", closure=plain(out))
    assert 'BASE_DIR = "/srv/app"' in (out / SITE / "app/settings.py").read_text()


def test_apply_patch_leaves_the_linked_file_alone(tmp_path: Path, patch_tool: str) -> None:
    deps, forest = linked_closure(tmp_path)
    out = forest.out
    diff = write(tmp_path / "fix.diff", PATCH)
    apply_patch(patch_sub(diff), out, where="substitute[0]", closure=forest)
    assert deps.read_text() == SETTINGS
    assert 'BASE_DIR = "/srv/app"' in (out / SITE / "app/settings.py").read_text()


def test_a_file_a_patch_creates_in_a_linked_folder_stays_out_of_the_deps(
        tmp_path: Path, patch_tool: str) -> None:
    deps, forest = linked_closure(tmp_path)
    out = forest.out
    diff = write(tmp_path / "new.diff", f"""\
--- /dev/null
+++ b/{SITE}/app/extra.py
@@ -0,0 +1 @@
+EXTRA = 1
""")
    changed = apply_patch(patch_sub(diff), out, where="substitute[0]", closure=forest)
    assert (out / SITE / "app/extra.py").read_text() == "EXTRA = 1\n"
    assert not (out / SITE / "app").is_symlink()
    assert not (deps.parent / "extra.py").exists()
    assert changed == {out / SITE / "app/extra.py"}


def test_patch_that_does_not_apply_is_an_error(tmp_path: Path, patch_tool: str) -> None:
    out = closure(tmp_path)
    diff = write(tmp_path / "stale.diff", PATCH.replace("-BASE_DIR = os.getcwd()",
                                                        "-BASE_DIR = os.path.dirname(x)"))
    with pytest.raises(SubstituteError) as info:
        apply_patch(patch_sub(diff), out, where="substitute[4]", closure=plain(out))
    message = str(info.value)
    assert message.startswith("substitute[4]: stale.diff does not apply to the closure")
    assert "FAILED" in message  # patch's own report of the rejected hunk
    assert (out / SITE / "app/settings.py").read_text() == SETTINGS


def test_patch_touching_a_file_outside_the_closure_is_refused(tmp_path: Path,
                                                              patch_tool: str) -> None:
    out = closure(tmp_path)
    outside = write(tmp_path / "victim.py", "x = 1\n")
    diff = write(tmp_path / "escape.diff",
                 "--- a/../victim.py\n+++ b/../victim.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n")
    with pytest.raises(SubstituteError, match=r"touches \.\./victim\.py, outside the closure"):
        apply_patch(patch_sub(diff), out, where="substitute[0]", closure=plain(out))
    assert outside.read_text() == "x = 1\n"


# apply_all -----------------------------------------------------------------------------------


def test_apply_all_runs_in_order_and_names_the_failing_entry(tmp_path: Path,
                                                            patch_tool: str) -> None:
    out = closure(tmp_path)
    write(tmp_path / "recipe" / "fix.diff", PATCH)
    data = {"app": {"name": "demo", "version": "1.0.0"}, "substitute": [
        {"patch": "fix.diff"},
        {"file": "@site-packages@/app/settings.py", "replace": '"/srv/app"',
         "with": '"@out@"', "count": 1},
    ]}
    rec = parse_recipe(data, file=tmp_path / "recipe" / "venvseal.toml", key_prefix="")
    changed = apply_all(rec, out, VALUES, SITE, closure=plain(out))
    target = out / SITE / "app" / "settings.py"
    assert changed == {target}
    assert f'BASE_DIR = "{VALUES["out"]}"' in target.read_text()
    # The same recipe again: the text of the second entry is gone now.
    first_done = target.read_text()
    data["substitute"] = data["substitute"][1:]
    rec = parse_recipe(data, file=tmp_path / "recipe" / "venvseal.toml",
                       key_prefix="tool.venvseal.")
    with pytest.raises(SubstituteError, match=r"^tool\.venvseal\.substitute\[0\]: "):
        apply_all(rec, out, VALUES, SITE, closure=plain(out))
    assert target.read_text() == first_done


# Every header that names a file is checked, not only ---/+++ (issue 13.9). Each row: the
# kind of header, the diff (it names ../victim.py in that header only), the name reported.
ESCAPES = [
    ("git rename to", "diff --git a/x.py b/x.py\nsimilarity index 100%\n"
     "rename from x.py\nrename to ../victim.py\n", "../victim.py"),
    ("git rename from", "diff --git a/x.py b/x.py\nrename from ../victim.py\n"
     "rename to x.py\n", "../victim.py"),
    ("git copy to", "diff --git a/x.py b/x.py\ncopy from x.py\ncopy to ../../victim.py\n",
     "../../victim.py"),
    ("git copy from an absolute path", "diff --git a/x.py b/x.py\ncopy from /etc/shadow\n"
     "copy to x.py\n", "/etc/shadow"),
    ("diff --git line", "diff --git a/../victim.py b/../victim.py\nnew file mode 100644\n",
     "../victim.py"),
    ("diff --git line, quoted", 'diff --git "a/../vic\\164im.py" "b/../vic\\164im.py"\n'
     "deleted file mode 100644\n", "../victim.py"),
    ("Index line", "Index: ../victim.py\n===\n", "../victim.py"),
    ("context diff header", "*** ../victim.py\t2026-01-01\n--- ../victim.py\t2026-01-01\n"
     "***************\n*** 1 ****\n! x = 1\n--- 1 ----\n! x = 2\n", "../victim.py"),
    ("absolute +++", "--- a/x.py\n+++ /tmp/victim.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n",
     "/tmp/victim.py"),
]


@pytest.mark.parametrize(("diff", "name"), [row[1:] for row in ESCAPES],
                         ids=[row[0] for row in ESCAPES])
def test_every_header_naming_a_path_outside_the_closure_is_refused(
        tmp_path: Path, patch_tool: str, diff: str, name: str) -> None:
    out = closure(tmp_path)
    write(out / "x.py", "x = 1\n")
    outside = write(tmp_path / "victim.py", "x = 1\n")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    patch = write(tmp_path / "escape.diff", diff)
    with pytest.raises(SubstituteError, match=rf"touches {re.escape(name)}, outside the closure"):
        apply_patch(patch_sub(patch, strip=1), out, where="substitute[0]", closure=plain(out))
    assert outside.read_text() == "x = 1\n"
    assert (out / "x.py").read_text() == "x = 1\n"
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == sorted([*before, "escape.diff"])


def test_a_git_rename_inside_the_closure_applies(tmp_path: Path, patch_tool: str) -> None:
    out = closure(tmp_path)
    write(out / "pkg/old.py", "x = 1\n")
    patch = write(tmp_path / "rename.diff", "diff --git a/pkg/old.py b/pkg/new.py\n"
                  "similarity index 100%\nrename from pkg/old.py\nrename to pkg/new.py\n")
    apply_patch(patch_sub(patch), out, where="substitute[0]", closure=plain(out))
    assert (out / "pkg/new.py").read_text() == "x = 1\n"
    assert not (out / "pkg/old.py").exists()
