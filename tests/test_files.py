"""lima_lite.files: atomic writes with the usual permissions, and a JSONL reader that names file:line."""

import os
import stat

import pytest

from lima_lite import LimaError
from lima_lite.files import atomic_dir, read_jsonl, write_json, write_jsonl, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_usual_permissions(tmp_path, umask_022):
    assert mode(write_jsonl([{"a": 1}], tmp_path / "rows.jsonl")) == 0o644
    assert mode(write_json(tmp_path / "run.json", {"status": "running"})) == 0o644
    assert mode(write_text(tmp_path / "x.md", "hi")) == 0o644
    with atomic_dir(tmp_path / "adapter") as tmp:
        (tmp / "weights").write_bytes(b"w")
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "f").write_text("f")
        os.chmod(tmp / "sub" / "f", 0o600)
    folder = tmp_path / "adapter"
    modes = (mode(folder), mode(folder / "sub"), mode(folder / "weights"), mode(folder / "sub" / "f"))
    assert modes == (0o755, 0o755, 0o644, 0o644)


def test_the_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        assert mode(write_text(tmp_path / "private.txt", "x")) == 0o600
        with atomic_dir(tmp_path / "private") as tmp:
            (tmp / "f").write_text("x")
        assert mode(tmp_path / "private") == 0o700 and mode(tmp_path / "private" / "f") == 0o600
    finally:
        os.umask(old)


def test_atomic_dir_refuses_to_replace_when_asked(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(LimaError, match="already exists"):
        with atomic_dir(target, replace=False) as tmp:
            (tmp / "new").write_text("x")
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_read_jsonl_names_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n{broken\n')
    with pytest.raises(LimaError, match=r"a\.jsonl:4: invalid JSON"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert read_jsonl(path) == [(1, {"a": 1}), (3, {"b": 2})]
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(LimaError, match="not UTF-8"):
        read_jsonl(path)
    path.write_text("[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(LimaError, match=r"a\.jsonl:1: invalid JSON: nested too deeply"):
        read_jsonl(path)
