"""Disposition codes: what an agent can say a call was about, from ``config/dispositions.toml``.

The code is what the timeline stores (stable for reports and the external CRM); the label is
what the agent reads. ``require_outcome`` says the agent stays in wrap-up until the outcome of
a call is saved. ``customer = false`` marks a disposition that needs nobody (a wrong number): an
unknown caller's outcome is then saved without making a customer up.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class DispositionsError(ValueError):
    """The dispositions file is invalid (message says where)."""


@dataclass(frozen=True)
class Disposition:
    code: str
    label: str
    needs_customer: bool = True


@dataclass(frozen=True)
class Dispositions:
    items: tuple[Disposition, ...]
    require_outcome: bool = True

    def __post_init__(self) -> None:
        if not self.items:
            raise DispositionsError("at least one [[disposition]] is needed")
        codes = [d.code for d in self.items]
        for d in self.items:
            if not _CODE.fullmatch(d.code):
                raise DispositionsError(f"disposition code {d.code!r}: use a-z, 0-9, _ and -")
            if not d.label.strip() or len(d.label) > 80:
                raise DispositionsError(f"disposition {d.code!r}: label empty or too long")
            if codes.count(d.code) > 1:
                raise DispositionsError(f"disposition code {d.code!r} appears twice")

    @classmethod
    def load(cls, path: str | Path) -> Dispositions:
        """Read the TOML file. Raises DispositionsError."""
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DispositionsError(f"cannot read dispositions {path}: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Dispositions:
        unknown = set(raw) - {"require_outcome", "disposition"}
        if unknown:
            raise DispositionsError(f"unknown keys {sorted(unknown)}")
        require = raw.get("require_outcome", True)
        if not isinstance(require, bool):
            raise DispositionsError("require_outcome must be true or false")
        items = []
        for i, body in enumerate(raw.get("disposition", []), 1):
            texts = (body.get("code"), body.get("label"))
            if not {"code", "label"} <= set(body) <= {"code", "label", "customer"} or not all(
                isinstance(v, str) for v in texts
            ):
                raise DispositionsError(
                    f"[[disposition]] #{i}: needs code and label (and may have customer)"
                )
            customer = body.get("customer", True)
            if not isinstance(customer, bool):
                raise DispositionsError(f"[[disposition]] #{i}: customer must be true or false")
            items.append(Disposition(body["code"], body["label"], customer))
        return cls(tuple(items), require)

    def get(self, code: str) -> Disposition | None:
        return next((d for d in self.items if d.code == code), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "require_outcome": self.require_outcome,
            "items": [
                {"code": d.code, "label": d.label, "customer": d.needs_customer} for d in self.items
            ],
        }
