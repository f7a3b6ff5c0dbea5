"""Label and field selectors, parsed and matched like the Kubernetes API server does."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kubeemu.errors import bad_request

Matcher = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> Matcher:
    """Compile ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` into a matcher over an object's labels."""
    if not text or not text.strip():
        return lambda obj: True
    requirements: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split_top_level(text):
        if m := _SET_RE.match(part):
            key, op = m.group(1), m.group(3)
            values = {value.strip() for value in m.group(4).split(",") if value.strip()}
            if op == "in":
                requirements.append(lambda labels, k=key, v=values: labels.get(k) in v)
            else:
                requirements.append(lambda labels, k=key, v=values: labels.get(k) not in v)
        elif m := _EQ_RE.match(part):
            key, op, value = m.group(1), m.group(3), m.group(4)
            if op == "!=":
                requirements.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                requirements.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
        elif m := _EXISTS_RE.match(part):
            negated, key = m.group(1) == "!", m.group(2)
            if negated:
                requirements.append(lambda labels, k=key: k not in labels)
            else:
                requirements.append(lambda labels, k=key: k in labels)
        else:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}: invalid label selector")

    def match(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in requirements)

    return match


def _lookup(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None, supported: frozenset[str]) -> Matcher:
    """Compile ``metadata.name=x,metadata.namespace!=y`` into a matcher over whole objects.

    Fields outside ``supported`` are rejected with 400, as the real server does.
    """
    if not text or not text.strip():
        return lambda obj: True
    requirements: list[Matcher] = []
    for part in _split_top_level(text):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.groups()
        if field not in supported:
            raise bad_request(f'"{field}" is not a known field selector: only "{", ".join(sorted(supported))}"')
        if op == "!=":
            requirements.append(lambda obj, f=field, v=value: _lookup(obj, f) != v)
        else:
            requirements.append(lambda obj, f=field, v=value: _lookup(obj, f) == v)
    return lambda obj: all(requirement(obj) for requirement in requirements)
