"""E.164 normalisation: the spellings the issue names, extensions, junk, display."""

from __future__ import annotations

import pytest

from crm_sync.phones import PhoneNormalizer


@pytest.mark.parametrize(
    ("region", "raw", "e164"),
    [
        ("CN", "+86 138 0013 8000", "+8613800138000"),
        ("CN", "008613800138000", "+8613800138000"),
        ("CN", "13800138000", "+8613800138000"),
        ("GB", "(0)20 7946 0958", "+442079460958"),
        ("GB", "+44 (0)20 7946 0958", "+442079460958"),
        ("CN", "+15550100001", "+15550100001"),  # a test range: possible, not valid
        ("CN", "1001", None),  # internal extension
        ("GB", "123456", None),
        ("CN", "<unknown>", None),
        ("CN", "anonymous", None),
        ("CN", "+86 138 0013 8000; DROP TABLE", None),
        ("CN", "12", None),
    ],
)
def test_to_e164(region: str, raw: str, e164: str | None) -> None:
    assert PhoneNormalizer(region).to_e164(raw) == e164


def test_display_is_national_at_home_and_international_abroad() -> None:
    cn = PhoneNormalizer("CN")
    assert cn.display("+8613800138000") == "138 0013 8000"
    assert cn.display("+442079460958") == "+44 20 7946 0958"
    assert cn.display("not a number") == "not a number"


def test_extension_length_is_configurable() -> None:
    assert PhoneNormalizer("CN", internal_max_digits=4).to_e164("1234") is None
    assert PhoneNormalizer("CN", internal_max_digits=4).is_internal("1234")
    assert not PhoneNormalizer("CN", internal_max_digits=4).is_internal("12345")
