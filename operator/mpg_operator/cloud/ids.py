"""Identifiers compared as identifiers: one canonical form for every id the API deals in.

Organization ids, service ids and the owner-uid tag are UUIDs. Users copy them from consoles
and scripts in any case, with braces or without hyphens; the API writes them lower-case and
hyphenated. Every id that enters the operator (a credentials Secret, a spec, a status written by
an older version, an API answer, a tag) is put in that form on the way in, so comparisons are
plain string equality and nothing reads "the same organization in upper case" as another one.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator


def canonical_id(value: str) -> str:
    """``value`` as the API writes it: a UUID lower-case and hyphenated; anything else only stripped."""
    text = value.strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def canonical_id_or_none(value: str | None) -> str | None:
    """:func:`canonical_id`, with ``None`` and the empty string kept as they are."""
    return canonical_id(value) if value else value


def same_id(a: str | None, b: str | None) -> bool:
    """True when two ids name the same thing (both present and equal in canonical form)."""
    return bool(a and b) and canonical_id(a or "") == canonical_id(b or "")


CanonicalId = Annotated[str, AfterValidator(canonical_id)]
"""A pydantic field type: an id stored in canonical form whatever form it was given in."""
