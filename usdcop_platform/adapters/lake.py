"""Partitioned parquet lake rooted at Settings.data_dir: <root>/<dataset>/<partition>.parquet.

Writes are atomic (temp file + rename), so a crash never leaves a half-written partition, and
upserts are keyed (the live path adds one bar at a time to today's partition).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl


class ParquetLake:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, dataset: str, partition: str) -> Path:
        return self.root / dataset / f"{partition}.parquet"

    def exists(self, dataset: str, partition: str) -> bool:
        return self.path(dataset, partition).exists()

    def write(self, dataset: str, partition: str, df: pl.DataFrame) -> Path:
        """Replace a partition atomically."""
        target = self.path(dataset, partition)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{partition}.", suffix=".tmp")
        os.close(fd)
        try:
            df.write_parquet(tmp, compression="zstd", statistics=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def upsert(self, dataset: str, partition: str, df: pl.DataFrame, key: str = "time") -> pl.DataFrame:
        """Insert or replace rows by `key` (new rows win), keep the partition sorted; returns it."""
        return self.merge_write(dataset, partition, self.read(dataset, partition), df, key)

    def merge_write(self, dataset: str, partition: str, existing: pl.DataFrame | None, df: pl.DataFrame,
                    key: str = "time") -> pl.DataFrame:
        """`upsert` onto a partition the caller already holds (`existing`, as read or as last written)."""
        merged = df if existing is None else pl.concat([existing, df.select(existing.columns)], how="vertical")
        merged = merged.unique(subset=[key], keep="last", maintain_order=True).sort(key)
        self.write(dataset, partition, merged)
        return merged

    def stamp(self, dataset: str, partition: str) -> tuple[int, int, int] | None:
        """(inode, mtime ns, size) of the partition file, None when absent: a writer replaces the
        file atomically, so an unchanged stamp means the contents a caller holds are current."""
        try:  # os.stat on the joined text: no Path objects (the live bar asks twice)
            st = os.stat(os.path.join(self.root, dataset, f"{partition}.parquet"))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def read(self, dataset: str, partition: str) -> pl.DataFrame | None:
        p = self.path(dataset, partition)
        return pl.read_parquet(p) if p.exists() else None

    def read_many(self, dataset: str, partitions: Iterable[str]) -> pl.DataFrame | None:
        """Concatenate the partitions that exist, in the order given; None when none exist."""
        frames = [f for f in (self.read(dataset, p) for p in partitions) if f is not None and f.height]
        return pl.concat(frames, how="vertical") if frames else None

    def partitions(self, dataset: str) -> list[str]:
        d = self.root / dataset
        return sorted(p.stem for p in d.glob("*.parquet")) if d.is_dir() else []

    def delete(self, dataset: str, partition: str) -> None:
        self.path(dataset, partition).unlink(missing_ok=True)
