"""The one error type for bad configuration: it always names the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration file is unreadable or its content is invalid."""

    def __init__(self, file: str | Path, key: str, reason: str) -> None:
        self.file = str(file)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.file}: {key or '<root>'}: {reason}")
