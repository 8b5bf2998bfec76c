"""Spec files: atomic writes, content versions, one winner among concurrent edits, safe names."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgeloop.generator.store import (
    FolderNotWritable,
    InvalidName,
    PipelineExists,
    PipelineNotFound,
    VersionConflict,
    content_version,
    create_spec_file,
    delete_spec_file,
    list_spec_files,
    read_spec_file,
    update_spec_file,
    write_atomic,
)


def test_create_then_read_gives_the_text_and_its_content_version(tmp_path: Path) -> None:
    stored = create_spec_file(tmp_path, "plant1", "name: plant1\n")
    assert stored.path == tmp_path / "plant1.yaml"
    assert stored.version == content_version(b"name: plant1\n") and len(stored.version) == 16
    again = read_spec_file(tmp_path, "plant1")
    assert (again.text, again.version) == ("name: plant1\n", stored.version)


def test_creating_an_existing_pipeline_is_refused_and_keeps_the_file(tmp_path: Path) -> None:
    (tmp_path / "plant1.yml").write_text("name: plant1\n")
    with pytest.raises(PipelineExists, match=r"already exists \(plant1\.yml\)"):
        create_spec_file(tmp_path, "plant1", "name: other\n")
    assert (tmp_path / "plant1.yml").read_text() == "name: plant1\n"
    assert not (tmp_path / "plant1.yaml").exists()


def test_an_edit_from_the_current_version_is_saved(tmp_path: Path) -> None:
    first = create_spec_file(tmp_path, "plant1", "v: 1\n")
    second = update_spec_file(tmp_path, "plant1", "v: 2\n", first.version)
    assert read_spec_file(tmp_path, "plant1").text == "v: 2\n"
    assert second.version != first.version


def test_an_edit_from_a_stale_version_is_refused_with_both_versions(tmp_path: Path) -> None:
    first = create_spec_file(tmp_path, "plant1", "v: 1\n")
    second = update_spec_file(tmp_path, "plant1", "v: 2\n", first.version)
    with pytest.raises(VersionConflict) as refused:
        update_spec_file(tmp_path, "plant1", "v: 3\n", first.version)
    assert refused.value.current == second.version
    assert "changed by someone else since you opened it" in str(refused.value)
    assert read_spec_file(tmp_path, "plant1").text == "v: 2\n"


def test_of_many_concurrent_edits_from_one_version_exactly_one_wins(tmp_path: Path) -> None:
    base = create_spec_file(tmp_path, "plant1", "v: 0\n")
    results: dict[int, str] = {}
    start = threading.Barrier(8)

    def edit(i: int) -> None:
        start.wait()
        try:
            update_spec_file(tmp_path, "plant1", f"v: {i + 1}\n", base.version)
            results[i] = "saved"
        except VersionConflict:
            results[i] = "refused"

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "saved"]
    assert len(winners) == 1 and list(results.values()).count("refused") == 7
    assert read_spec_file(tmp_path, "plant1").text == f"v: {winners[0] + 1}\n"


def test_writes_leave_no_temporary_files_and_replace_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "plant1.yaml"
    path.write_text("old\n")
    inode_before = path.stat().st_ino
    write_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert path.stat().st_ino != inode_before  # a new file renamed over the old one, not an in-place rewrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plant1.yaml"]


def test_a_failed_write_keeps_the_old_spec_and_removes_the_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "plant1.yaml"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "bad \udcff surrogate\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plant1.yaml"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "Plant1", "x", "1abc", "", "a" * 41, "plant1.yaml", "plant-1"])
def test_names_outside_the_pattern_never_touch_the_disk(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidName, match="not a valid pipeline name"):
        create_spec_file(tmp_path, name, "x: 1\n")
    with pytest.raises(InvalidName):
        read_spec_file(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_delete_needs_the_current_version(tmp_path: Path) -> None:
    first = create_spec_file(tmp_path, "plant1", "v: 1\n")
    update_spec_file(tmp_path, "plant1", "v: 2\n", first.version)
    with pytest.raises(VersionConflict):
        delete_spec_file(tmp_path, "plant1", first.version)
    delete_spec_file(tmp_path, "plant1", read_spec_file(tmp_path, "plant1").version)
    with pytest.raises(PipelineNotFound):
        read_spec_file(tmp_path, "plant1")


def test_listing_skips_hidden_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "b_pipe.yaml").write_text("b\n")
    (tmp_path / "a_pipe.yml").write_text("a\n")
    (tmp_path / ".a_pipe.yaml.x1.tmp").write_text("half\n")
    (tmp_path / "README.md").write_text("docs\n")
    assert [s.name for s in list_spec_files(tmp_path)] == ["a_pipe", "b_pipe"]
    assert list_spec_files(tmp_path / "missing") == []


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FolderNotWritable, match="does not exist"):
        create_spec_file(tmp_path / "nope", "plant1", "x: 1\n")
