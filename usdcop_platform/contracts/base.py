"""Shared plumbing for the typed config models: strict pydantic base, YAML loading, hashing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from usdcop_platform.contracts.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(problem=f"duplicate key {key!r} at line {line} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """yaml.safe_load's loader, except that a key repeated in one mapping is an error.

    The YAML spec requires unique keys, but PyYAML silently keeps the last: `seeds: [7]` appended
    to an experiment file would replace its seeds unnoticed and be recorded as the contract."""


def _construct_strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden explicitly
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise DuplicateKeyError(key, line, seen[key])
            seen[key] = line
        except TypeError:  # an unhashable key: the standard constructor reports it
            continue
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_strict_mapping)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with StrictLoader (duplicate keys raise DuplicateKeyError)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning I/O and syntax problems (and duplicate keys) into a ConfigError
    naming the file, the line and the key."""
    if not path.exists():
        raise ConfigError(path, "", "file not found")
    try:
        content = load_yaml_text(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:
        raise ConfigError(
            path, str(exc.key), f"duplicate key at line {exc.line} (first at line {exc.first_line}); "
            "YAML would silently keep only the last one, so the file is refused"
        ) from None
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
    """sha256 hex of `data` (str as UTF-8; lone surrogates kept, so any str an HTTP header can carry hashes)."""
    return hashlib.sha256(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data).hexdigest()


def sha256_parts(parts: Iterable[str | bytes]) -> str:
    """sha256 hex of the concatenation of `parts`, streamed (large binary content, e.g. model weights)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part)
    return h.hexdigest()


def hmac_sha256_hex(key: str, message: bytes) -> str:
    """HMAC-SHA256 hex of `message` under `key` (compare with hmac.compare_digest)."""
    return hmac.new(key.encode("utf-8", "surrogatepass"), message, hashlib.sha256).hexdigest()


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
