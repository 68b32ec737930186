"""What `plan` shows and `up` applies: one change per resource, with each differing attribute.

Each step's ``compare`` builds these from what was read and what the config asks for; `plan`
prints them, `up` prints them too and then applies exactly them. Pure: no AWS here.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CREATE, UPDATE, REPLACE, DELETE, NOOP = "create", "update", "replace", "delete", "unchanged"
ACTIONS = (CREATE, UPDATE, REPLACE, DELETE, NOOP)
SENSITIVE = "(sensitive)"
NONE = "(none)"


def pending(what: str) -> str:
    """A placeholder for an id that exists only once `up` has made the resource."""
    return f"(new {what})"


def is_pending(value: str) -> bool:
    return value.startswith("(") and value.endswith(")")


@dataclass(frozen=True)
class Diff:
    """One attribute: what AWS has (None: nothing) and what the config asks for (None: remove)."""

    attribute: str
    old: Any = None
    new: Any = None
    sensitive: bool = False

    def shown(self, value: Any) -> str:
        if self.sensitive and value is not None:
            return SENSITIVE
        return text(value)

    def to_dict(self) -> dict[str, Any]:
        hide = self.sensitive
        return {
            "attribute": self.attribute,
            "old": SENSITIVE if hide and self.old is not None else self.old,
            "new": SENSITIVE if hide and self.new is not None else self.new,
            "sensitive": self.sensitive,
        }


@dataclass(frozen=True)
class Change:
    """What `up` would do to one resource.

    ``blocked``: AWS cannot make this change in place and `up` will not replace the resource
    (it would lose data or everything in it); the text says what to do instead.
    """

    kind: str
    name: str
    action: str = NOOP
    diffs: tuple[Diff, ...] = ()
    note: str = ""
    blocked: str = ""
    referenced: bool = False  # the user's own (their VPC): read, never changed

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    def has(self, attribute: str) -> bool:
        return any(d.attribute == attribute for d in self.diffs)

    def get(self, attribute: str) -> Diff | None:
        return next((d for d in self.diffs if d.attribute == attribute), None)

    @property
    def changed(self) -> bool:
        return self.action != NOOP

    def summary(self, limit: int = 6) -> str:
        """'retention days, tag team' (for progress lines)."""
        names = list(dict.fromkeys(d.attribute for d in self.diffs))
        more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "changes": [d.to_dict() for d in self.diffs],
            "note": self.note,
            "blocked": self.blocked,
        }


def change(
    kind: str, name: str, diffs: Iterable[Diff], created: bool = False, note: str = ""
) -> Change:
    """CREATE when ``created``; else UPDATE when any diff; else NOOP."""
    found = tuple(diffs)
    action = CREATE if created else (UPDATE if found else NOOP)
    return Change(kind, name, action, found, note)


def tag_diffs(want: Mapping[str, str], have: Mapping[str, str] | None) -> list[Diff]:
    """One diff per tag to set or remove; AWS's own `aws:` keys are not ours to manage."""
    have = {k: v for k, v in (have or {}).items() if not k.startswith("aws:")}
    diffs = [Diff(f"tag {k}", have.get(k), v) for k, v in sorted(want.items()) if have.get(k) != v]
    diffs += [Diff(f"tag {k}", have[k], None) for k in sorted(have) if k not in want]
    return diffs


def tags_of(c: Change) -> tuple[dict[str, str], list[str]]:
    """(tags to set, keys to remove) from a change's tag diffs: what `up` applies."""
    to_set = {
        d.attribute[4:]: str(d.new)
        for d in c.diffs
        if d.attribute.startswith("tag ") and d.new is not None
    }
    to_remove = [
        d.attribute[4:] for d in c.diffs if d.attribute.startswith("tag ") and d.new is None
    ]
    return to_set, to_remove


def has_tags(c: Change) -> bool:
    return any(d.attribute.startswith("tag ") for d in c.diffs)


def text(value: Any) -> str:
    """A value as one line: None as (none), lists joined, documents as compact JSON."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ", ".join(text(v) for v in items) if items else "[]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def short_diff(old: str, new: str, context: int = 1, limit: int = 200) -> tuple[str, str]:
    """For long values (a shell command, a policy): only the words that differ, with a word
    of context each side, '…' for what is left out."""
    if len(old) + len(new) <= 2 * 60:
        return old, new
    a, b = _words(old), _words(new)
    parts_a: list[str] = []
    parts_b: list[str] = []
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_grouped_opcodes(context)
    for group in ops:
        i1, i2 = group[0][1], group[-1][2]
        j1, j2 = group[0][3], group[-1][4]
        parts_a.append("".join(a[i1:i2]).strip())
        parts_b.append("".join(b[j1:j2]).strip())
    return _clip(" … ".join(parts_a), limit), _clip(" … ".join(parts_b), limit)


def _words(value: str) -> list[str]:
    """Words with their separators, so joined slices read as the original."""
    return [token + " " for token in value.split(" ")]


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass
class Plan:
    """Every resource's change, in the order `up` makes them."""

    stack: str
    region: str
    changes: list[Change] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.changes)

    @property
    def exists(self) -> bool:
        """Anything of the stack already there (then `up` shows the plan first)."""
        return any(c.action != CREATE and not c.referenced for c in self.changes)

    @property
    def destructive(self) -> list[Change]:
        """What `up` asks for confirmation for: a resource replaced or deleted."""
        return [c for c in self.changes if c.action in {REPLACE, DELETE} and not c.blocked]

    @property
    def blocked(self) -> list[Change]:
        return [c for c in self.changes if c.blocked]

    def summary(self) -> str:
        if not self.changed:
            return f"No changes: stack {self.stack!r} matches the config."
        counts = [
            f"{self.count(a)} to {a}" for a in (CREATE, UPDATE, REPLACE, DELETE) if self.count(a)
        ]
        line = f"Plan: {', '.join(counts)}; {self.count(NOOP)} unchanged."
        if self.blocked:
            line += f" {len(self.blocked)} cannot be made by `up` (see above)."
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "changed": self.changed,
            "summary": {a: self.count(a) for a in ACTIONS},
            "blocked": len(self.blocked),
            "resources": [c.to_dict() for c in self.changes],
        }
