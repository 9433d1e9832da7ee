"""edge.atomicfile: a file is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge import atomicfile


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "zone.db"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomicfile.replacing(target) as tmp:
        Path(tmp).write_text("half of the n")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["zone.db"]


def test_the_mode_is_kept_or_given(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.write_text("a")
    kept.chmod(0o640)
    atomicfile.write_text(kept, "b", sync_dir=True)
    assert kept.read_text() == "b" and kept.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "fresh"
    atomicfile.write_text(fresh, "c")
    assert fresh.stat().st_mode & 0o777 == 0o644
    secret = tmp_path / "secret"
    atomicfile.write_text(secret, "d", mode=0o600)
    assert secret.stat().st_mode & 0o777 == 0o600


def test_missing_directories_are_made_only_when_asked(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "state.json"
    with pytest.raises(FileNotFoundError):
        atomicfile.write_text(nested, "{}")
    atomicfile.write_text(nested, "{}", make_parents=True)
    assert nested.read_text() == "{}"
