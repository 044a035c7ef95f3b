"""Who wins when the external CRM and this service disagree: the conflict rules in one place.

Theory of operation. Every field has one owner, and only its owner's writes change it.

* The CRM owns who a customer is and how to reach them (:data:`CRM_COLUMNS`, the phones and
  the external id). Inbound writes (the REST API, the CSV import) set them; nothing here
  changes them, except that a merge fills the survivor's blanks (:func:`merge_fill`).
* This service owns what happens here and what it computes from it: calls, call outcomes,
  follow-ups and their state, survey scores, the IVR PIN, and the segments
  (:data:`LOCAL_COLUMNS`). An inbound tier or lifecycle is only a starting value for a
  customer the CRM creates (:data:`STARTING_COLUMNS`); from then on the segments' recompute
  decides, and inbound values for them are not applied.
* Timeline entries have the owner of their kind: orders, tickets and notes from the CRM are
  the CRM's (:data:`CRM_KINDS`), stored under ``crm:<kind>:<id>`` (:func:`crm_key`), so an id
  of the CRM never meets an entry written here (``call:…``, ``outcome:…``) nor one of
  another kind with the same number.

Versions. The CRM sends each customer's ``updated_at``; it becomes the stored customer's
``updated_at``, and an update older than the stored one is not applied (:func:`is_stale`):
a late or retried delivery never overwrites newer data. Only inbound writes set a CRM
customer's ``updated_at`` (segments write ``segmented_at``), so the comparison is always
between the CRM's own clock readings, except for CSV rows without a version, which count as
current at the time of the import.

The full rules, with what happens to concurrent requests and merges, are in
docs/crm-inbound.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# customers columns written by every inbound update
CRM_COLUMNS = (
    "kind",
    "name",
    "company_id",
    "email",
    "address",
    "owner",
    "language",
    "tags",
    "balance",
    "currency",
)
# written by an inbound insert only; computed here afterwards (crm_sync.segments)
STARTING_COLUMNS = ("tier", "lifecycle")
# never written by an inbound write
LOCAL_COLUMNS = (
    "tier",
    "lifecycle",
    "quadrant",
    "segment_why",
    "segment_stale",
    "segmented_at",
    "pin_hash",
)
# the key, and the bookkeeping every write does
KEY_COLUMNS = ("id", "external_id", "created_at", "updated_at")

CRM_KINDS = ("order", "ticket", "note")  # the timeline entries the CRM may write
RESEGMENT_KINDS = frozenset({"order"})  # a change to these makes the segments stale

_PREFIX = "crm:{kind}:"
# interactions.external_id is 64 characters; the longest prefix is "crm:ticket:"
MAX_ENTRY_ID = 64 - len(_PREFIX.format(kind=max(CRM_KINDS, key=len)))

# filled on a merge's survivor when it lacks them; balance and currency go as a pair
_FILLABLE = ("external_id", "company_id", "email", "address", "owner", "language", "pin_hash")


def crm_key(kind: str, external_id: str) -> str:
    """The stored ``interactions.external_id`` of the CRM's entry ``external_id``."""
    if kind not in CRM_KINDS:
        raise ValueError(f"{kind!r} is not one of the CRM's kinds {', '.join(CRM_KINDS)}")
    return _PREFIX.format(kind=kind) + external_id


def utc(value: datetime) -> datetime:
    """An aware UTC time; a naive one is UTC already (SQLite keeps no zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_stale(incoming: datetime | None, stored: datetime | None) -> bool:
    """True when an update of version ``incoming`` must not be applied over ``stored``: it
    is strictly older. An update without a version, or as new as the stored one (a retry),
    is applied."""
    if incoming is None or stored is None:
        return False
    return utc(incoming) < utc(stored)


def merge_fill(survivor: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a merge sets on the survivor: what the survivor has it keeps, what it
    lacks it takes from the merged customer (the balance together with its currency), and
    the merged customer's tags are added to its own."""
    fill = {
        name: merged[name]
        for name in _FILLABLE
        if survivor[name] is None and merged[name] is not None
    }
    if survivor["balance"] is None and merged["balance"] is not None:
        fill["balance"] = merged["balance"]
        fill["currency"] = merged["currency"]
    tags = list(dict.fromkeys([*(survivor["tags"] or ()), *(merged["tags"] or ())]))
    if tags != list(survivor["tags"] or ()):
        fill["tags"] = tags
    return fill
