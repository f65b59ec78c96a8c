"""Each concept has one home (issue #16): the code is scanned for second copies, and derived registries are tied."""

from __future__ import annotations

import re
from pathlib import Path

from usdcop_platform.contracts.base import hmac_sha256_hex, sha256_hex, sha256_parts
from usdcop_platform.contracts.features import feature_order_hash

PACKAGE = Path(__file__).resolve().parents[2] / "usdcop_platform"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in PACKAGE.rglob("*.py")}


def _offenders(pattern: str, allowed: set[str]) -> list[str]:
    rx = re.compile(pattern)
    return sorted(f"{path}:{text[:m.start()].count(chr(10)) + 1}" for path, text in _sources().items()
                  if path not in allowed for m in rx.finditer(text))


def test_hashing_lives_in_contracts_base() -> None:
    assert _offenders(r"\bhashlib\b", {"usdcop_platform/contracts/base.py"}) == []
    assert sha256_parts(["a", b"b", "c"]) == sha256_hex("abc")
    assert sha256_hex("\udc80") == sha256_parts(["\udc80"])  # lone surrogates (header bytes) hash, not raise
    assert len(hmac_sha256_hex("cookie", b"csrf")) == 64 and hmac_sha256_hex("a", b"m") != hmac_sha256_hex("b", b"m")


def test_feature_order_hash_has_one_formula() -> None:
    # the formula `sha256_hex(",".join(...))` is written once, in contracts/features.py
    assert _offenders(r"""sha256_hex\(\s*["'],["']\.join""", {"usdcop_platform/contracts/features.py"}) == []
    assert feature_order_hash(["a", "b"]) == sha256_hex("a,b") == feature_order_hash(iter(["a", "b"]))
