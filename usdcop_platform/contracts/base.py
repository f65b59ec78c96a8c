"""Shared plumbing for the typed config models: strict pydantic base, YAML loading, hashing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from usdcop_platform.contracts.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning I/O and syntax problems into a ConfigError naming the file."""
    if not path.exists():
        raise ConfigError(path, "", "file not found")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(path, "", f"malformed YAML at {where}: {getattr(exc, 'problem', exc)}") from exc
    if content is None:
        raise ConfigError(path, "", "file is empty")
    return content


def validate(model: type[M], data: Any, path: Path | str) -> M:
    """Validate data against a model; the first error becomes a ConfigError with a dotted key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        raise ConfigError(path, key, reason) from exc


def load_model(model: type[M], path: Path) -> M:
    return validate(model, read_yaml(path), path)


def canonical_json(data: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace): the input of every content hash."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def content_hash(data: Any) -> str:
    """sha256 of the canonical JSON of data: the one way hashes of structured content are made."""
    return sha256_hex(canonical_json(data))


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
