"""Field numbers that never change: the committed ``fields.lock.json`` next to each module.

A number, once given to a field of a message (or to a value of an enum), belongs to it for good:
regenerating, renaming around it or removing the field never frees it. A removed field's number
becomes ``reserved`` in the versions that no longer have it (see ``_descriptor``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FieldLock"]


@dataclass
class FieldLock:
    """Message name → field name → number, and enum name → value name → number."""

    messages: dict[str, dict[str, int]] = field(default_factory=dict)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    changed: bool = field(default=False, compare=False)

    @classmethod
    def load(cls, path: Path) -> FieldLock:
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        lock = cls(
            messages={m: dict(f) for m, f in data.get("messages", {}).items()},
            enums={e: dict(v) for e, v in data.get("enums", {}).items()},
        )
        lock._check(path)
        return lock

    def _check(self, path: Path) -> None:
        """Refuse a hand-edited lock in which two fields share a number."""
        for kind, table in (("message", self.messages), ("enum", self.enums)):
            for name, numbers in table.items():
                seen: dict[int, str] = {}
                for fname, number in numbers.items():
                    if number in seen:
                        raise ValueError(
                            f"{path}: field-number clash in {kind} {name}: "
                            f"{seen[number]!r} and {fname!r} both use {number}"
                        )
                    seen[number] = fname

    def to_json(self) -> dict[str, Any]:
        return {
            "enums": {e: dict(sorted(v.items(), key=lambda kv: kv[1])) for e, v in sorted(self.enums.items())},
            "messages": {
                m: dict(sorted(f.items(), key=lambda kv: kv[1])) for m, f in sorted(self.messages.items())
            },
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def field_number(self, message: str, name: str) -> int:
        """The number of ``message.name``, assigning the next unused one the first time."""
        return self._number(self.messages, message, name, first=1)

    def enum_number(self, enum: str, value: str) -> int:
        """The number of an enum value; 0 is the ``_UNSPECIFIED`` value and never assigned."""
        return self._number(self.enums, enum, value, first=1)

    def _number(self, table: dict[str, dict[str, int]], owner: str, name: str, first: int) -> int:
        numbers = table.setdefault(owner, {})
        if name not in numbers:
            numbers[name] = max(numbers.values(), default=first - 1) + 1
            if numbers[name] == 19000:  # 19000-19999 are reserved by protobuf itself
                numbers[name] = 20000
            self.changed = True
        return numbers[name]
