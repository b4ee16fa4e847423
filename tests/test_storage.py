"""The storage root's write primitives: whole files, exclusive creation, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.storage import Storage


@pytest.mark.parametrize("remote", [False, True], ids=["local", "mock"])
def test_create_writes_once_and_write_replaces_whole(tmp_path: Path, remote: bool):
    storage = Storage.open("mock://bucket/root" if remote else str(tmp_path / "root"))
    assert storage.create_json({"n": 1}, "v", "manifest.json") is True
    assert storage.create_json({"n": 2}, "v", "manifest.json") is False
    assert storage.read_json("v", "manifest.json") == {"n": 1}
    storage.write_json({"n": 3}, "v", "manifest.json")
    assert storage.read_json("v", "manifest.json") == {"n": 3}
    assert [i.base_name for i in storage.list_files("v")] == ["manifest.json"]
    storage.delete_file("v", "manifest.json")
    storage.delete_file("v", "manifest.json")  # already gone: nothing to do
    assert storage.list_files("v") == [] and storage.list_files("nowhere") == []


def test_moving_a_directory_keeps_every_file(tmp_path: Path):
    storage = Storage.open(str(tmp_path / "root"))
    storage.write_bytes(b"a", "staged", "data", "part-0.parquet")
    storage.write_bytes(b"b", "staged", "part-1.parquet")
    storage.move("staged", "final/v1")
    assert sorted(i.path[len(storage.path("final")) + 1:] for i in storage.list_files("final")) \
        == ["v1/data/part-0.parquet", "v1/part-1.parquet"]
    assert not storage.exists("staged")
