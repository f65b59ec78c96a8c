"""The JSON columns' serializer: its fast paths (orjson, or the standard C encoder for what orjson
refuses, both calling back for non-native values) write the same JSON value as the full jsonable()
walk (when two keys of a dict become the same string, e.g. True and "true", the text repeats the
key and any reader keeps the last, as the walk does), NaN/inf become null, unknown types are
refused."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import PurePosixPath

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usdcop_platform.adapters.store.types import json_serializer, jsonable

_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.just(timezone.utc)), st.dates(),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.floats(-1e6, 1e6, width=32).map(np.float32),
    st.integers(-1000, 1000).map(np.int64),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4).map(np.array),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)
_keys = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.none())
_values = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(_keys, inner, max_size=4)), max_leaves=20)
# string keys only: every value orjson takes (the journal's shape)
_documents = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


def _walked(value: object) -> str:
    return json.dumps(jsonable(value), allow_nan=False, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(_values)
def test_fast_path_writes_what_the_walk_writes(value):
    assert json.loads(json_serializer(value)) == json.loads(_walked(value))


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_orjson_path_writes_what_the_walk_writes(value):
    assert json.loads(json_serializer(value)) == json.loads(_walked(value))


def test_values_orjson_refuses_take_the_standard_encoder():
    big = {"n": 2**70, "x": [float("nan")]}  # beyond 64 bits
    assert json.loads(json_serializer(big)) == {"n": 2**70, "x": [None]}


def test_same_text_when_no_keys_collide():
    value = {"a": [1.5, np.float32(0.25), {"b": datetime(2024, 1, 2, tzinfo=timezone.utc)}], 3: None, None: True}
    assert json_serializer(value) == _walked(value)


def test_colliding_keys_read_back_like_the_walk():
    text = json_serializer({True: 1, "true": 2})
    assert json.loads(text) == json.loads(_walked({True: 1, "true": 2})) == {"true": 2}


def test_typical_journal_goes_through_and_non_finite_becomes_null():
    at = datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc)
    journal = {"last_bar": at, "trading_date": at.date(), "features": np.arange(3, dtype=np.float64),
               "path": PurePosixPath("/m/x.onnx"), "pnl": Decimal("0.125"), "flags": {True: 1, None: 2}}
    assert json.loads(json_serializer(journal)) == {
        "last_bar": "2024-03-05T13:00:00+00:00", "trading_date": "2024-03-05", "features": [0.0, 1.0, 2.0],
        "path": "/m/x.onnx", "pnl": 0.125, "flags": {"true": 1, "null": 2}}
    assert json_serializer({"x": float("nan"), "y": [np.inf, 1.0]}) == '{"x":null,"y":[null,1.0]}'


def test_unknown_types_are_refused_with_their_name():
    with pytest.raises(TypeError, match="timedelta"):
        json_serializer({"x": timedelta(seconds=1)})
    assert date(2024, 1, 1).isoformat() in json_serializer([date(2024, 1, 1)])
