"""The on-disk cache trusts a file only when its sha256 sidecar matches; hashes are content-only."""
from pathlib import Path

import pytest

from optlab.data import cache, hashing


def test_a_written_file_is_valid_until_its_bytes_change(tmp_path):
    path = cache.write_checked(tmp_path / "sub" / "model.bin", lambda tmp: Path(tmp).write_bytes(b"weights"))
    assert path.read_bytes() == b"weights" and cache.is_valid(path)
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []
    path.write_bytes(b"weightz")  # same size, other bytes: a silent corruption
    assert not cache.is_valid(path)
    cache.invalidate(path)
    assert not path.exists() and not Path(str(path) + ".sha256").exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken(tmp):
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.write_checked(tmp_path / "model.bin", broken)
    assert list(tmp_path.iterdir()) == []
    assert not cache.is_valid(tmp_path / "model.bin")


def test_cache_dir_lives_under_optlab_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTLAB_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir("models") == tmp_path / "c" / "models" and (tmp_path / "c" / "models").is_dir()


def test_tree_hash_sees_names_and_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"1")
    first = hashing.sha256_tree(tmp_path / "a")
    (tmp_path / "a" / "x.bin").rename(tmp_path / "a" / "y.bin")
    renamed = hashing.sha256_tree(tmp_path / "a")
    (tmp_path / "a" / "y.bin").write_bytes(b"2")
    assert len({first, renamed, hashing.sha256_tree(tmp_path / "a")}) == 3
    with pytest.raises(ValueError, match="holds no files"):
        hashing.sha256_tree(tmp_path / "empty")


def test_json_hash_ignores_key_order():
    assert hashing.sha256_json({"a": 1, "b": [1, 2]}) == hashing.sha256_json({"b": [1, 2], "a": 1})
    assert hashing.sha256_json({"a": 1}) != hashing.sha256_json({"a": 1.5})
