"""Phone numbers in one form (E.164) so every spelling of a number finds the same customer.

``+86 138 0013 8000``, ``008613800138000`` and ``13800138000`` (default region CN) are all
``+8613800138000``; ``(0)20 7946 0958`` (region GB) is ``+442079460958``. Short internal
extensions (``1001``) are never a customer's number. Numbers are kept when *possible* for their
country, not only when *valid*: test ranges such as +1 555 01xx are possible but not valid, and
a CTI must still match them.
"""

from __future__ import annotations

import phonenumbers

_DIAL_CHARS = frozenset("0123456789+()-. /")


class PhoneNormalizer:
    """Parses raw numbers with a default region (ISO 3166 code, e.g. ``CN``, ``GB``)."""

    def __init__(self, default_region: str = "CN", internal_max_digits: int = 6) -> None:
        self.default_region = default_region.upper()
        self.internal_max_digits = internal_max_digits

    def is_internal(self, raw: str) -> bool:
        """An internal extension: only digits, and no longer than ``internal_max_digits``."""
        digits = raw.strip()
        return digits.isdigit() and len(digits) <= self.internal_max_digits

    def to_e164(self, raw: str) -> str | None:
        """E.164 form of ``raw``, or None for internal, anonymous or impossible numbers."""
        text = raw.strip()
        if not text or self.is_internal(text) or not set(text) <= _DIAL_CHARS:
            return None
        try:
            number = phonenumbers.parse(text, self.default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return e164

    def display(self, e164: str) -> str:
        """How an agent reads the number: national form at home, international abroad."""
        try:
            number = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return e164
        home = phonenumbers.region_code_for_number(number) == self.default_region
        style = (
            phonenumbers.PhoneNumberFormat.NATIONAL
            if home
            else phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        text: str = phonenumbers.format_number(number, style)
        return text
