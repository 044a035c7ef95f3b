"""The CRM's JSON records, read into the store's input forms (pure: objects in, records out).

A record is a JSON object. The types are checked here (text is a string, a list a list of
strings, a time ISO 8601 with its zone, an amount a number or a decimal string); what the
values mean (codes, lengths, e-mail addresses, phone numbers) is checked afterwards by
crm_sync.customers.validate and crm_sync.inbound.validate_entry. Every problem is a
CustomerError naming the field. A field this service does not know is an error too: a
misspelt field is refused, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_sync.customers import CustomerError, CustomerIn, InteractionIn
from crm_sync.inbound import ENTRY_FIELDS
from crm_sync.text import line, required_line

CUSTOMER_FIELDS = (
    "external_id",
    "updated_at",
    "customer_id",
    "kind",
    "name",
    "company_external_id",
    "email",
    "phones",
    "address",
    "owner",
    "language",
    "tier",
    "lifecycle",
    "tags",
    "balance",
    "currency",
)
MERGE_FIELDS = ("survivor_external_id", "merged_external_id", "by")


@dataclass(frozen=True)
class CustomerRecord:
    """A customer as the CRM sent it, and the store id it says the record is (to link a
    customer first known here), if any."""

    customer: CustomerIn
    link_to: int | None


def customer_record(body: Any, external_id: str | None = None) -> CustomerRecord:
    """One customer object; ``external_id`` is the one of the URL (the body's, if any, must
    be the same). Raises CustomerError."""
    record = _object(body, CUSTOMER_FIELDS, "customer")
    customer = CustomerIn(
        external_id=_key(record, external_id),
        kind=_text(record, "kind") or "",
        name=_text(record, "name") or "",
        company_external_id=_text(record, "company_external_id"),
        email=_text(record, "email"),
        address=_text(record, "address"),
        owner=_text(record, "owner"),
        language=_text(record, "language"),
        tier=_text(record, "tier") or "",
        lifecycle=_text(record, "lifecycle") or "",
        tags=_texts(record, "tags"),
        phones=_texts(record, "phones"),
        balance=_amount(record, "balance"),
        currency=_text(record, "currency"),
        updated_at=_required_time(record, "updated_at"),
    )
    return CustomerRecord(customer, _store_id(record, "customer_id"))


def entry_record(kind: str, body: Any, external_id: str | None = None) -> InteractionIn:
    """One order, ticket or note object (fields: inbound.ENTRY_FIELDS); ``external_id`` as
    for :func:`customer_record`. Raises CustomerError."""
    record = _object(body, ENTRY_FIELDS[kind], kind)
    return InteractionIn(
        customer_external_id=_text(record, "customer_external_id"),
        kind=kind,
        occurred_at=_required_time(record, "occurred_at"),
        title=_text(record, "title") or "",
        body=_text(record, "body"),
        status=_text(record, "status"),
        due_at=_time(record, "due_at"),
        owner=_text(record, "owner"),
        amount=_amount(record, "amount"),
        external_id=_key(record, external_id),
    )


def merge_record(body: Any) -> tuple[str, str, str]:
    """A merge object: (survivor's external id, merged one's, who asked: ``by`` or "crm").
    Raises CustomerError, or crm_sync.text.FieldError for text it refuses."""
    record = _object(body, MERGE_FIELDS, "merge")
    ids = []
    for name in ("survivor_external_id", "merged_external_id"):
        ids.append(required_line(_text(record, name), name, 64))
    if ids[0] == ids[1]:
        raise CustomerError("merged_external_id", "a customer cannot be merged into itself")
    return ids[0], ids[1], line(_text(record, "by"), "by", 64) or "crm"


def _object(body: Any, fields: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise CustomerError("body", f"a {what} is a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise CustomerError(
            str(unknown[0]), f"not a field of a {what} (fields: {', '.join(fields)})"
        )
    return body


def _key(record: Mapping[str, Any], from_url: str | None) -> str | None:
    given = _text(record, "external_id")
    if from_url is None:
        return given
    if given is not None and given.strip() != from_url.strip():
        raise CustomerError("external_id", f"{given!r} differs from the URL's {from_url!r}")
    return from_url


def _text(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None or isinstance(value, str):
        return value
    raise CustomerError(name, f"expected text, not {_type(value)}")


def _texts(record: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = record.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CustomerError(name, "expected a list of text")
    return tuple(value)


def _time(record: Mapping[str, Any], name: str) -> datetime | None:
    text = _text(record, name)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CustomerError(
            name, f"{text!r} is not an ISO 8601 time such as 2026-11-23T12:00:00Z"
        ) from None


def _required_time(record: Mapping[str, Any], name: str) -> datetime:
    when = _time(record, name)
    if when is None:
        raise CustomerError(name, "required: an ISO 8601 time with its zone")
    return when


def _amount(record: Mapping[str, Any], name: str) -> Decimal | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise CustomerError(name, f"expected a number or a decimal string, not {_type(value)}")
    try:
        return Decimal(str(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise CustomerError(name, f"{value!r} is not an amount") from None


def _store_id(record: Mapping[str, Any], name: str) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise CustomerError(name, "expected a customer's number in this store")
    return value


def _type(value: Any) -> str:
    return {bool: "true/false", dict: "an object", list: "a list"}.get(type(value), "a number")
