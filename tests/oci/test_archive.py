"""The archive's temp file: removed on any error, and when its writer was killed outright
(SIGKILL), removed by the next archive written beside it; a live writer's is left alone.
A layout folder instead of an archive: hard links to the kept layers, skopeo reads it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.image import edited_closure, fake_build, require_tool, stored_fake_build

from venvseal.errors import UsageError
from venvseal.oci import archive, archivefile
from venvseal.oci.image import build_blobs, save
from venvseal.oci.layers import ImageError
from venvseal.store.core import Store

# Writes an archive of the made-up image at argv[2] and stops for good in the middle of
# copying the first blob, after saying so.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from support.image import fake_build
    from venvseal.oci import archivefile
    from venvseal.oci.image import build_blobs, save

    def stuck(self, source, size):
        print("copying", flush=True)
        time.sleep(600)

    archivefile._TarWriter._copy = stuck
    base = Path(sys.argv[2]).parent
    config, paths, runtime = fake_build(base / ("tree-" + sys.argv[3]))
    (base / sys.argv[3]).mkdir()
    save(build_blobs(config, paths, runtime, base / sys.argv[3]), Path(sys.argv[2]),
         config.tag)
""")
TESTS = Path(__file__).parents[1]


def start_writer(out: Path, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(TESTS), str(out), name],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "copying"
    return proc


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_writers_temp_file_goes_at_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "app.tar"
    killed = start_writer(out, "killed")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert temps(tmp_path) == [f".app.tar.{killed.pid}.tmp"]
    live = start_writer(out, "live")
    try:
        config, paths, runtime = fake_build(tmp_path / "tree")
        (tmp_path / "scratch").mkdir()
        save(build_blobs(config, paths, runtime, tmp_path / "scratch"), out, config.tag)
        # The killed writer's is gone, the live one's is not; the archive is whole.
        assert temps(tmp_path) == [f".app.tar.{live.pid}.tmp"]
        with archive.open_archive(out) as image:
            assert len(image.blobs) == 4
    finally:
        live.kill()
        live.wait()
        assert live.stdout is not None
        live.stdout.close()
    assert archivefile.remove_stale_temps(out) == [tmp_path / f".app.tar.{live.pid}.tmp"]
    assert temps(tmp_path) == []


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    config, paths, runtime = fake_build(tmp_path / "tree")
    (tmp_path / "scratch").mkdir()
    image = build_blobs(config, paths, runtime, tmp_path / "scratch")
    image.layer_files[0].write_bytes(b"shorter than the layer")
    out = tmp_path / "app.tar"
    with pytest.raises(ImageError, match="ended after 22 of"):
        save(image, out, config.tag)
    assert temps(tmp_path) == [] and not out.exists()


def test_a_layout_folder_links_the_kept_layers(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    with Store(tmp_path / "store") as store:
        config, paths, runtime = stored_fake_build(tmp_path / "tree", store)
        first = build_blobs(config, paths, runtime, tmp_path, store=store)
        save(first, layout, config.tag)
        blob = layout / "blobs/sha256" / first.layers[1].digest[7:]
        assert blob.stat().st_ino == first.layer_files[1].stat().st_ino  # linked, not copied
        index = json.loads((layout / "index.json").read_bytes())
        assert index["manifests"][0]["digest"] == first.manifest_digest
        skopeo = require_tool("skopeo", "skopeo")
        done = subprocess.run([skopeo, "inspect", f"oci:{layout}"], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["Digest"] == first.manifest_digest
        # After an app edit the layout names the new image; the old app layer is gone.
        (layout / "blobs/sha256/.dead.999999999.tmp").write_bytes(b"a killed writer's")
        edited = build_blobs(config, edited_closure(store, paths, tmp_path, "4" * 32 + "-x-2"),
                             runtime, tmp_path, store=store)
        save(edited, layout, config.tag)
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == edited.manifest_digest
    assert sorted(p.name for p in (layout / "blobs/sha256").iterdir()) == sorted(
        {d[7:] for d in (edited.manifest_digest, edited.config_digest,
                         *(layer.digest for layer in edited.layers))})


def test_a_folder_that_is_no_layout_is_refused(tmp_path: Path) -> None:
    config, paths, runtime = fake_build(tmp_path / "tree")
    (tmp_path / "scratch").mkdir()
    image = build_blobs(config, paths, runtime, tmp_path / "scratch")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(UsageError, match="is a folder but no OCI image layout"):
        save(image, folder, config.tag)
    assert sorted(p.name for p in folder.iterdir()) == ["cat.jpg"]
