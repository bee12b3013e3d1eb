"""Every output goes through one guarded, atomic destination (issue 9; DESIGN.md invariants 6 and 9).

Each test here failed on the code before the guard: a report written over the
input, a mask written over a symlinked input, a hidden temporary left by SIGTERM,
a race between two runs on one output, a full disk leaving a half-written file,
``--co`` values GDAL silently ignored, a TIFF behind a ``.png`` name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from tests.conftest import smooth_image, write_tif
from tiler.cli import main
from tiler.destination import Destination, clean_stale, guard_outputs, is_temporary_name
from tiler.errors import OutputBusyError, OutputExistsError, OutputPathError


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "scene.tif", smooth_image(3, 48, 56))


def _cli(runner, *args):
    return runner.invoke(main, [*map(str, args)], catch_exceptions=False)


def _one_error_line(result, code, text):
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert text in lines[0], lines[0]
    assert "Traceback" not in result.output


def _leftovers(folder, keep=()):
    """Files in ``folder`` other than ``keep``: outputs, temporaries, locks."""
    return sorted(f for f in os.listdir(folder) if f not in keep)


def _digest(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------ destination checks

def test_report_over_the_input_scene_is_refused_even_with_overwrite(runner, tmp_path, scene, tiny_model):
    before = _digest(scene)
    for extra in ([], ["--overwrite"]):
        r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model,
                 "--report", tmp_path / "scene.json", "-q", *extra)
        assert r.exit_code == 0, r.output  # a .json beside the scene is fine
        os.unlink(tmp_path / "out.tif")
        os.unlink(tmp_path / "scene.json")
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--report", scene,
             "--overwrite", "-q")
    _one_error_line(r, 2, "--report")
    assert _digest(scene) == before
    assert _leftovers(tmp_path) == ["scene.tif"]


def test_report_named_like_the_model_or_the_mask_is_refused(runner, tmp_path, scene, tiny_model):
    before = _digest(tiny_model)
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--report", tiny_model,
             "--overwrite", "-q")
    assert r.exit_code == 2 and "Error: " in r.output
    assert _digest(tiny_model) == before  # the model file is untouched, byte for byte


def test_out_equal_to_the_input_through_a_symlink_is_refused_with_overwrite(runner, tmp_path, scene, tiny_model):
    link = tmp_path / "link.tif"
    os.symlink(scene, link)
    before = _digest(scene)
    r = _cli(runner, "run", scene, "-o", link, "--model", tiny_model, "--overwrite", "-q")
    _one_error_line(r, 2, "is the input")
    r = _cli(runner, "run", link, "-o", scene, "--model", tiny_model, "--overwrite", "-q")
    _one_error_line(r, 2, "is the input")
    assert _digest(scene) == before and os.path.islink(link)


def test_output_over_a_member_of_a_sensor_folder_or_a_manifest_is_refused(runner, tmp_path):
    folder = tmp_path / "s2"
    folder.mkdir()
    for band in ("B02", "B03", "B04", "B08"):
        write_tif(folder / f"T18SVG_{band}.tif", (smooth_image(1, 40, 40).astype(np.uint16) * 20 + 500))
    r = _cli(runner, "indices", folder, "--index", "ndvi", "-o", folder / "T18SVG_B04.tif", "--overwrite", "-q")
    _one_error_line(r, 2, "is the input")
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'[groups.a]\nfiles = ["{folder / "T18SVG_B04.tif"}", "{folder / "T18SVG_B08.tif"}"]\n'
                        'bands = ["red", "nir"]\n')
    r = _cli(runner, "indices", manifest, "--index", "ndvi", "-o", folder / "T18SVG_B08.tif", "--overwrite", "-q")
    _one_error_line(r, 2, "is the input")


def test_two_outputs_of_one_command_at_one_path_are_refused(tmp_path):
    with pytest.raises(OutputPathError, match="same file"):
        guard_outputs({"--out": tmp_path / "a.json", "--report": tmp_path / "a.json"})
    os.symlink(tmp_path / "b.json", tmp_path / "c.json")
    with pytest.raises(OutputPathError, match="same file"):
        guard_outputs({"--out": tmp_path / "b.json", "--report": tmp_path / "c.json"})


def test_missing_report_folder_is_found_before_any_work(runner, tmp_path, scene, tiny_model):
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model,
             "--report", tmp_path / "nope" / "run.json", "-q")
    _one_error_line(r, 2, "does not exist")
    assert _leftovers(tmp_path) == ["scene.tif"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_report_folder_is_found_before_any_work(runner, tmp_path, scene, tiny_model):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model,
             "--report", locked / "run.json", "-q")
    _one_error_line(r, 2, "not writable")
    assert "out.tif" not in os.listdir(tmp_path)


@pytest.mark.parametrize("name", ["mask.png", "mask.jpg", "mask"])
def test_a_geotiff_is_never_written_behind_another_name(runner, tmp_path, scene, tiny_model, name):
    r = _cli(runner, "run", scene, "-o", tmp_path / name, "--model", tiny_model, "-q")
    _one_error_line(r, 2, ".tif")
    assert _leftovers(tmp_path) == ["scene.tif"]


@pytest.mark.parametrize("co, text", [("COMPRESS=FOO", "COMPRESS"), ("BLOCKXSIZE=100", "BLOCKXSIZE"),
                                      ("NOT_AN_OPTION=1", "NOT_AN_OPTION"), ("ZLEVEL=99", "ZLEVEL")])
def test_bad_creation_options_are_refused_up_front(runner, tmp_path, scene, tiny_model, co, text):
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--co", co, "-q")
    _one_error_line(r, 2, text)
    assert _leftovers(tmp_path) == ["scene.tif"]


def test_good_creation_options_are_applied(runner, tmp_path, scene, tiny_model):
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--co", "COMPRESS=ZSTD",
             "--co", "BLOCKXSIZE=256", "--co", "BLOCKYSIZE=256", "-q")
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.compression.name.lower() == "zstd" and ds.block_shapes[0] == (256, 256)


# ------------------------------------------------------------ atomic commit, locks, stale files

def test_a_file_created_at_the_destination_during_a_run_is_not_replaced(tmp_path):
    with pytest.raises(OutputExistsError, match="created by someone else"):
        with guard_outputs({"--out": tmp_path / "r.json"}) as guard:
            dest = guard["--out"]
            tmp = dest.temporary()
            with open(tmp, "w") as f:
                f.write("ours")
            (tmp_path / "r.json").write_text("someone else's")
            dest.commit()  # staged: the guard renames every output together when its block ends
    assert (tmp_path / "r.json").read_text() == "someone else's"
    assert _leftovers(tmp_path) == ["r.json"]


def test_temporary_names_carry_the_process_id_and_the_extension(tmp_path):
    with guard_outputs({"--out": tmp_path / "m.tif"}) as guard:
        tmp = guard["--out"].temporary()
        name = os.path.basename(tmp)
        assert f".tiler-{os.getpid()}-" in name and name.endswith(".part.tif") and is_temporary_name(name)
        assert is_temporary_name(".m.tif.tiler.lock")
    assert _leftovers(tmp_path) == []


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(runner, tmp_path, scene, tiny_model):
    live = subprocess.Popen(["sleep", "60"])
    try:
        dead = _dead_pid()
        stale = [f".out.tif.tiler-{dead}-0123abcd.part.tif", f".out.tif.tiler-{dead}-0123abcd.part.tif.aux.xml",
                 f".other.json.tiler-{dead}-89abcdef.part.json"]
        alive = f".out.tif.tiler-{live.pid}-fedcba98.part.tif"
        unrelated = ".out.tif.part.tif"  # not ours: never touched
        for name in stale + [alive, unrelated]:
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / ".old.tif.tiler.lock").write_text(str(dead))  # a lock nobody holds
        r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "-v")
        assert r.exit_code == 0, r.output
        assert f"left by process {dead}" in r.output
        left = set(os.listdir(tmp_path))
        assert not left & set(stale) and ".old.tif.tiler.lock" not in left
        assert {alive, unrelated, "out.tif", "scene.tif"} <= left
    finally:
        live.kill()
        live.wait()


def test_clean_stale_leaves_a_held_lock_alone(tmp_path):
    with guard_outputs({"--out": tmp_path / "x.tif"}):
        assert clean_stale(tmp_path) == []
        assert ".x.tif.tiler.lock" in os.listdir(tmp_path)
    assert _leftovers(tmp_path) == []


#: The last line of a command interrupted before its commit step (nothing was renamed into place).
_NOTHING_WRITTEN = "Terminated (SIGTERM); no output was written; files already at the output paths are as they were."

_HOLD = """
import sys, time
from tiler.destination import guard_outputs
g = guard_outputs({"--out": sys.argv[1]})
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(runner, tmp_path, scene, tiny_model):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "out.tif")], stdout=subprocess.PIPE,
                              text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "-q")
        _one_error_line(r, 2, f"another tiler process (pid {holder.pid})")
        with pytest.raises(OutputBusyError):
            guard_outputs({"--out": tmp_path / "out.tif"}, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # The holder died without cleaning up: its lock is free, the next run goes ahead.
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "-q")
    assert r.exit_code == 0, r.output
    assert _leftovers(tmp_path) == ["out.tif", "scene.tif"]


def test_destination_write_text_is_atomic_and_replaces_only_with_overwrite(tmp_path):
    target = tmp_path / "a.json"
    Destination(target, overwrite=False).write_text("1")
    with pytest.raises(OutputExistsError):
        Destination(target, overwrite=False).write_text("2")
    Destination(target, overwrite=True).write_text("3")
    assert target.read_text() == "3" and _leftovers(tmp_path) == ["a.json"]


# ------------------------------------------------------------ signals and a full disk

def _tiler(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tiler.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                            **kwargs)


def test_sigterm_mid_run_exits_143_and_leaves_nothing(tmp_path, tiny_model):
    big = write_tif(tmp_path / "big.tif", smooth_image(3, 1536, 1536))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # One stream (--parts 1): a run in parts keeps its journalled parts to resume (test_distributed.py).
    proc = _tiler("run", big, "-o", out_dir / "mask.tif", "--model", tiny_model, "--batch-size", "4",
                  "--strip-rows", "32", "--parts", "1")
    try:
        deadline = time.monotonic() + 120
        while not any(".part.tif" in f for f in os.listdir(out_dir)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    # The last line is tiler's; a library interrupted mid-import may print its own traceback above it.
    assert lines[-1] == _NOTHING_WRITTEN, err
    assert not any(ln.startswith("Error") for ln in lines), err
    assert os.listdir(out_dir) == []


def test_sigterm_turned_into_another_error_by_a_library_still_exits_143(tmp_path):
    """TensorFlow's lazy imports report an exception raised inside them as SystemError/AttributeError
    (seen in CI): the signal, not the error it became, decides the exit code."""
    import click
    from click.testing import CliRunner

    from tiler.cli._common import _handle_errors

    @click.command()
    @click.option("-v", "--verbose", count=True)
    @click.option("-q", "--quiet", is_flag=True)
    @_handle_errors
    def swallowing(verbose, quiet):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            raise AttributeError("'list' object has no attribute '_from_components'") from None
        raise AssertionError("SIGTERM was not delivered")

    @click.command()
    @click.option("-v", "--verbose", count=True)
    @click.option("-q", "--quiet", is_flag=True)
    @_handle_errors
    def failing(verbose, quiet):
        raise AttributeError("a real bug")

    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(swallowing, [])
    assert result.exit_code == 143, result.output
    assert result.output.strip() == _NOTHING_WRITTEN
    assert signal.getsignal(signal.SIGTERM) == before
    # The flag does not outlive its command: a later real failure is reported as one.
    result = CliRunner().invoke(failing, [])
    assert result.exit_code == 1 and "a real bug" in result.output, result.output


def _tiny_filesystem(path, size_kb):
    """Mount a tmpfs of ``size_kb`` at ``path``; False where this machine does not allow it."""
    if os.geteuid() != 0:
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _limit_file_size(limit):
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_is_one_line_exit_1_and_leaves_nothing(tmp_path, tiny_model):
    scene = write_tif(tmp_path / "scene.tif", (np.random.default_rng(0).random((3, 600, 600)) * 255)
                      .astype(np.uint8))
    small = tmp_path / "small"
    mounted = _tiny_filesystem(small, 256)
    try:
        if mounted:
            proc = _tiler("run", scene, "-o", small / "probs.tif", "--model", tiny_model, "--output",
                          "probability", "--co", "COMPRESS=NONE")
            expected = "Error: no space left on device writing"
        else:  # no tmpfs here: a child whose files may not grow past 256 kB
            small.mkdir(exist_ok=True)
            proc = _tiler("run", scene, "-o", small / "probs.tif", "--model", tiny_model, "--output",
                          "probability", "--co", "COMPRESS=NONE", preexec_fn=_limit_file_size(256 * 1024))
            expected = "Error: file size limit reached writing"
        _, err = proc.communicate(timeout=300)
        lines = [ln for ln in err.strip().splitlines() if ln and not ln.startswith(("warning:", "note:"))]
        assert proc.returncode == 1, err
        assert len(lines) == 1 and lines[0].startswith(expected), err
        assert "choose" in lines[0]
        assert os.listdir(small) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=False)


def test_the_report_is_written_atomically_and_is_valid_json(runner, tmp_path, scene, tiny_model):
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--report",
             tmp_path / "run.json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run.json").read_text())["out"] == str(tmp_path / "out.tif")
    assert _leftovers(tmp_path) == ["out.tif", "run.json", "scene.tif"]


@pytest.mark.parametrize("command", ["vector", "indices", "parts"])
def test_a_full_disk_is_named_on_every_write_path_and_nothing_is_left(tmp_path, tiny_model, command):
    """Issue 21.6/21.12: polygons and indices said 'opening the scene failed: ... Read failed' or
    'database or disk is full'; a run in parts left its journal."""
    rng = np.random.default_rng(0)
    small = tmp_path / "small"
    if not _tiny_filesystem(small, 256):
        pytest.skip("cannot mount a tmpfs here (not root, or no permission)")
    try:
        if command == "vector":
            scene = write_tif(tmp_path / "s.tif", (rng.random((3, 1200, 1200)) * 255).astype(np.uint8))
            args = ("run", scene, "--vector", small / "p.gpkg", "--model", tiny_model)
        elif command == "indices":
            scene = write_tif(tmp_path / "ms.tif", (rng.random((4, 1200, 1200)) * 3000).astype(np.uint16),
                              descriptions=("blue", "green", "red", "nir"), photometric="minisblack")
            args = ("indices", scene, "--index", "ndvi", "-o", small / "i.tif")
        else:
            scene = write_tif(tmp_path / "s.tif", (rng.random((3, 1200, 1200)) * 255).astype(np.uint8))
            args = ("run", scene, "-o", small / "m.tif", "--model", tiny_model, "--output", "probability",
                    "--co", "COMPRESS=NONE", "--parts", "3")
        proc = _tiler(*args)
        _, err = proc.communicate(timeout=300)
        lines = [ln for ln in err.strip().splitlines() if ln and not ln.startswith(("note:", "warning:"))]
        assert proc.returncode == 1, err
        assert len(lines) == 1 and lines[0].startswith("Error: no space left on device writing"), err
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_an_output_that_fails_its_verification_is_exit_4_and_not_renamed(runner, tmp_path, scene, tiny_model,
                                                                         monkeypatch):
    """Exit code 4 (DESIGN: output failed its own verification): the finished temporary file's transform is
    changed behind the writer's back (a disk or filesystem that does not keep what was written); the
    verification reads it back, refuses it, and nothing reaches --out."""
    from affine import Affine

    from tiler.output import MaskWriter

    real = MaskWriter._verify

    def tampered(self):
        with rasterio.open(self.tmp, "r+") as ds:
            ds.transform = Affine(99.0, 0.0, 0.0, 0.0, -99.0, 0.0)
        return real(self)

    monkeypatch.setattr(MaskWriter, "_verify", tampered)
    r = _cli(runner, "run", scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "-q")
    assert r.exit_code == 4, r.output
    assert "failed verification" in r.output and "transform" in r.output
    assert _leftovers(tmp_path) == ["scene.tif"]
