"""Writing beside a destination (slimkit.staging): target checks before any work, temporary files removed
on every failure path, and stale ones of dead writers removed by the next write, never a live writer's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slimkit.errors import ExportError
from slimkit.staging import TEMP_PREFIX, check_target, pid_alive, remove_stale, staged, temp_name


@pytest.fixture
def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    """The pid of a sleeping child, killed after the test."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def temps(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def test_stale_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path, dead_pid, live_pid):
    dead = temp_name(dead_pid)
    names = {
        "dead": dead, "dead_aux": dead + ".float.onnx",
        "live": temp_name(live_pid), "own": temp_name(),
        "other_host": f"{TEMP_PREFIX}{dead_pid}-00000000-0123abcd.tmp",
        "user_file": f"{TEMP_PREFIX}{dead_pid}-notes.txt",
    }
    if names["other_host"].split("-")[2] == temp_name().split("-")[2]:
        pytest.skip("this host's tag is 00000000")
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    assert not pid_alive(dead_pid) and pid_alive(live_pid)
    assert sorted(remove_stale(tmp_path)) == sorted([names["dead"], names["dead_aux"]])
    left = set(temps(tmp_path))
    assert left == {names["live"], names["own"], names["other_host"], names["user_file"]}


def test_a_write_removes_stale_files_and_its_own_on_failure(tmp_path, dead_pid, live_pid):
    stale, live = temp_name(dead_pid), temp_name(live_pid)
    (tmp_path / stale).write_bytes(b"x")
    (tmp_path / live).write_bytes(b"x")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="exporter died"):
        with staged(check_target(target)) as out:
            out.path.write_bytes(b"half")
            out.aux(".float.onnx").write_bytes(b"half")
            assert out.path.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-")
            raise RuntimeError("exporter died")
    assert temps(tmp_path) == [live] and target.read_bytes() == b"old"
    with staged(check_target(target)) as out:
        out.path.write_bytes(b"new")
        out.aux(".float.onnx").write_bytes(b"aux")
        out.commit()
    assert temps(tmp_path) == [live] and target.read_bytes() == b"new"


def test_written_files_get_the_usual_permissions(tmp_path):
    target = tmp_path / "m.onnx"
    with staged(check_target(target)) as out:
        out.commit()
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_targets_are_refused_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match=f"export_onnx: {tmp_path} is a directory; give a file path, such as "):
        check_target(tmp_path, "export_onnx")
    with pytest.raises(ExportError, match=r"cannot write .*missing/m\.onnx: directory .*missing does not exist"):
        check_target(tmp_path / "missing" / "m.onnx")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match=r"cannot write .*file/m\.onnx: .*file is not a directory"):
        check_target(tmp_path / "file" / "m.onnx")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ExportError, match=r"fifo exists and is not a regular file"):
        check_target(tmp_path / "fifo")
    loop = tmp_path / "loop.onnx"
    os.symlink(loop, loop)
    with pytest.raises(ExportError, match=r"loop\.onnx is a symbolic link (loop|that cannot be resolved)"):
        check_target(loop)
    read_only = tmp_path / "ro.onnx"
    read_only.write_text("")
    read_only.chmod(0o444)
    monkeypatch.setattr(os, "access", lambda p, mode: _access(p, mode, read_only))  # as a user, also for root
    with pytest.raises(ExportError, match=r"ro\.onnx is read-only; it is not replaced"):
        check_target(read_only)


def _access(path, mode, denied) -> bool:
    """os.access as an unprivileged user sees ``denied`` (root may write anywhere)."""
    return not (mode & os.W_OK and os.fspath(path) == os.fspath(denied))


def test_a_directory_without_write_permission_is_refused(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: make access() answer as for a user
            monkeypatch.setattr(os, "access", lambda p, mode: _access(p, mode, locked))
        with pytest.raises(ExportError, match=r"cannot write .*locked/m\.onnx: directory .*locked is not writable"):
            check_target(locked / "m.onnx", "export_onnx")
    finally:
        locked.chmod(0o755)


def test_a_symbolic_link_is_written_through(tmp_path):
    real = tmp_path / "v3.onnx"
    real.write_bytes(b"old")
    link = tmp_path / "latest.onnx"
    link.symlink_to(real.name)
    target = check_target(link)
    assert target == real
    with staged(target) as out:
        out.path.write_bytes(b"new")
        out.commit()
    assert link.is_symlink() and real.read_bytes() == b"new"
    dangling = tmp_path / "next.onnx"
    dangling.symlink_to(tmp_path / "sub" / "x.onnx")
    with pytest.raises(ExportError, match=r"sub/x\.onnx \(the target of the symbolic link .*next\.onnx\): directory"):
        check_target(dangling)
