"""The deps hash from a user's side: undeclared, declared by --update-hash with a notice,
a mismatch naming the file, the key and the fix; and what each build reused or built."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support import venvseal

CACHE = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests")) / "uv"
OTHER_HASH = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def build(app: Path, store: Path, *extra: str) -> tuple[int, str]:
    run = venvseal("build", app, "--store", store, "--uv-cache", CACHE, *extra)
    return run.code, run.err


@pytest.mark.slow
def test_hash_flow_and_stage_lines(locked_hello_app: Path, tmp_path: Path) -> None:
    app, store = locked_hello_app, tmp_path / "store"
    recipe = app / "venvseal.toml"
    assert venvseal("init", app, "--no-hash").code == 0
    # The project's own package is installed by the assembly on main; this test is about the
    # hash, so it checks no imports.
    text = recipe.read_text()
    recipe.write_text(text[:text.index("[verify]")])

    code, err = build(app, store)
    assert code == 1
    assert f"{recipe}: deps.hash is not declared" in err and "--update-hash" in err

    code, err = build(app, store, "--update-hash")
    assert code == 0, err
    declared = re.search(r'hash = "(sha256-[^"]+)"', recipe.read_text())
    assert declared is not None
    assert f'updated {recipe}: deps.hash = "{declared.group(1)}" (was "")' in err
    assert "closure: built" in err and "run it with: venvseal run" in err

    code, err = build(app, store, "--out-link", str(app / "result"))
    assert code == 0, err
    assert re.search(r"(?m)^deps: reused \S+-hello-deps \(its inputs are unchanged\)$", err)
    assert re.search(r"(?m)^closure: reused \S+-hello-0.1.0", err)
    assert "updated" not in err  # nothing rewritten, nothing said

    before = (app / "result").readlink().name
    source = app / "src" / "hello" / "__init__.py"
    source.write_text(source.read_text() + "\n# an edit\n")
    recipe.write_text(recipe.read_text() + '\n[[assemble.copy]]\nfrom = "src/hello"\n'
                      'to = "share/hello"\n')
    code, err = build(app, store, "--out-link", str(app / "result"))
    assert code == 0, err
    assert (f"because the app's files or the recipe changed (the dependencies are the same "
            f"as {before}'s)") in err

    recipe.write_text(recipe.read_text().replace(declared.group(1), OTHER_HASH))
    code, err = build(app, store)
    assert code == 1
    assert f"{recipe}: deps.hash: hash mismatch" in err
    assert f"'venvseal build --update-hash {app}'" in err
    doc = venvseal("--json", "build", app, "--store", store, "--uv-cache", CACHE).json()
    assert doc["problems"][0]["file"] == str(recipe)
    assert doc["problems"][0]["key"] == "deps.hash"
    assert "hash mismatch" in doc["problems"][0]["message"]
