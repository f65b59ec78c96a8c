"""Train/val/test date ranges: ordered and disjoint by construction."""

from __future__ import annotations

from datetime import date

from pydantic import model_validator

from usdcop_platform.contracts.base import StrictModel


class DateRange(StrictModel):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> "DateRange":
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    def contains(self, d: date) -> bool:
        return self.start <= d <= self.end


class DateRanges(StrictModel):
    train: DateRange
    val: DateRange
    test: DateRange

    @model_validator(mode="after")
    def _disjoint(self) -> "DateRanges":
        if not self.train.end < self.val.start:
            raise ValueError(f"train ({self.train.end}) must end before val starts ({self.val.start})")
        if not self.val.end < self.test.start:
            raise ValueError(f"val ({self.val.end}) must end before test starts ({self.test.start})")
        return self

    def splits(self) -> dict[str, DateRange]:
        return {"train": self.train, "val": self.val, "test": self.test}
