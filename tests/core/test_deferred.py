"""Report values measured on first read (slimkit.deferred): once, only from the file as written."""

from __future__ import annotations

import dataclasses
import gc
import gzip
import os

from slimkit.deferred import Pending, gzip_size, of_file
from slimkit.report import FileRow, QuantExportRow


def test_pending_measures_once_on_first_read() -> None:
    calls = []
    pending = Pending(lambda: calls.append(1) or 42)
    row = FileRow("m.onnx", "onnx", 10, pending, None, None)
    assert calls == []  # building the row measured nothing
    assert row.gzip_bytes == 42 and row.gzip_bytes == 42
    assert calls == [1]
    assert dataclasses.asdict(row)["gzip_bytes"] == 42 and calls == [1]


def test_row_fields_stay_required_and_frozen() -> None:
    row = FileRow("m.onnx", "onnx", 10, 7, None, None)
    assert row.gzip_bytes == 7 and row == FileRow("m.onnx", "onnx", 10, 7, None, None)
    try:
        row.gzip_bytes = 8  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("FileRow.gzip_bytes was assignable")
    try:
        QuantExportRow("q.onnx", 1, 1)  # type: ignore[call-arg]
    except TypeError as exc:
        assert "float_latency_ms" in str(exc)
    else:
        raise AssertionError("QuantExportRow accepted missing latencies")


def test_file_measured_as_written(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    data = bytes(range(256)) * 400 + b"\0" * 50_000
    path.write_bytes(data)
    assert of_file(path, gzip_size).result() == len(gzip.compress(data, 6))
    changed = of_file(path, gzip_size)
    path.write_bytes(data[:-1])  # another size: not the file the row describes
    assert changed.result() is None
    gone = of_file(path, gzip_size)
    path.unlink()
    assert gone.result() is None
    path.write_bytes(data)
    unreadable = of_file(path, lambda p: (_ for _ in ()).throw(PermissionError(13, "Permission denied", str(p))))
    assert unreadable.result() is None  # a read that fails: no measurement, no raw OSError from a report


def test_written_file_moved_into_place(tmp_path) -> None:
    tmp, dest = tmp_path / "tmp.onnx", tmp_path / "dest.onnx"
    tmp.write_bytes(b"x" * 1000)
    pending = of_file(dest, lambda p: p.stat().st_size, written=tmp)
    os.replace(tmp, dest)  # what the staged export's commit does
    assert pending.result() == 1000


def test_owned_folder_removed_after_measuring_or_when_dropped(tmp_path) -> None:
    measured, dropped = tmp_path / "a", tmp_path / "b"
    for folder in (measured, dropped):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"1234")
    pending = of_file(measured / "model.onnx", lambda p: p.read_bytes(), owned_folder=measured)
    assert pending.result() == b"1234" and not measured.exists()
    assert pending.result() == b"1234"  # kept after the folder went
    unread = of_file(dropped / "model.onnx", lambda p: p.read_bytes(), owned_folder=dropped)
    assert dropped.exists()
    del unread
    gc.collect()
    assert not dropped.exists()
