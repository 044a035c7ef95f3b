"""A database error says what failed, never the customer data it was writing (issue 22, #7):
its message is logged (screenpop/errors.py, the pop's write retries), so bound parameters —
names, phones, notes — must not be in it."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from crm_sync.db import create_engine
from crm_sync.models import Customer

SECRET = "Zoë Secret-Name 13800138000"


async def test_a_failed_write_is_logged_without_its_parameters(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(db_url)
    try:
        with pytest.raises(IntegrityError) as failed:
            async with engine.begin() as connection:  # no created_at: refused by the database
                await connection.execute(insert(Customer).values(name=SECRET, kind="person"))
    finally:
        await engine.dispose()
    logging.getLogger("test").warning("database failure: %s", failed.value)
    assert "customers" in str(failed.value)  # what failed is said
    assert "parameters hidden" in str(failed.value)
    assert SECRET not in caplog.text and "Secret" not in str(failed.value)
