"""CIFAR-10 recipe: batch order whatever the archive order, and one pass over the gzip stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import thresher.recipes.cifar10 as cifar
from thresher.errors import MalformedDataError
from thresher.miniature import write_tar
from thresher.sources import members
from thresher.sources.archive import iter_tar, walking_each_tar_once
from thresher.sources.members import iter_archive


def shuffled_copy(tmp_path: Path, order: list[str], drop: str | None = None) -> tuple[Path, dict]:
    """The miniature archive rewritten with its members in ``order`` (and one dropped)."""
    miniature = cifar.RECIPE.write_miniature(tmp_path)
    members = {m.name: m.read() for m in iter_tar(miniature.files[cifar.ARCHIVE])}
    path = write_tar(tmp_path / "shuffled.tar.gz", {name: members[name] for name in order if name != drop},
                     compression="gz")
    return path, miniature.records


def rows(recipe: cifar.Cifar10, split: str, path: Path) -> list[dict]:
    return [r for batch in recipe.records(split, {cifar.ARCHIVE: path}) for r in batch.rows()]


def test_both_splits_come_from_one_pass_within_one_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = cifar.FOLDER
    order = [f"{folder}/data_batch_3.bin", f"{folder}/test_batch.bin", f"{folder}/data_batch_1.bin",
             f"{folder}/data_batch_5.bin", f"{folder}/data_batch_2.bin", f"{folder}/data_batch_4.bin"]
    path, want = shuffled_copy(tmp_path, order)
    passes = []
    monkeypatch.setattr(members, "iter_archive", lambda p, **kw: passes.append(p) or iter_archive(p, **kw))
    recipe = cifar.Cifar10()
    with walking_each_tar_once():  # what prepare runs its splits in
        for split in ("train", "test"):
            got = rows(recipe, split, path)
            assert [r["label"] for r in got] == [r["label"] for r in want[split]]
            assert all(np.array_equal(g["image"], w["image"]) for g, w in zip(got, want[split], strict=True))
    assert len(passes) == 1
    # Nothing outlives the prepare, on the recipe or elsewhere: outside one, each split walks.
    assert vars(recipe) == {}
    passes.clear()
    assert [r["label"] for r in rows(recipe, "test", path)] == [r["label"] for r in want["test"]]
    assert len(passes) == 1


def test_a_missing_batch_is_named(tmp_path: Path) -> None:
    names = [f"{cifar.FOLDER}/data_batch_{i}.bin" for i in range(1, 6)] + [f"{cifar.FOLDER}/test_batch.bin"]
    path, _ = shuffled_copy(tmp_path, names, drop=f"{cifar.FOLDER}/data_batch_4.bin")
    with pytest.raises(MalformedDataError, match="data_batch_4.bin.*missing"):
        rows(cifar.Cifar10(), "train", path)
