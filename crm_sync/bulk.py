"""Many rows in a few statements, on both backends: what a bulk import needs.

On PostgreSQL a list of values travels as one parameter. A key lookup is ``column =
ANY(:keys)`` rather than ``IN (:k1, …, :k2000)``: one prepared statement whatever the
count, and no parameters to render. Rows go in as one JSON array of arrays, ``INSERT …
SELECT CAST(r->>0 AS …), … FROM jsonb_array_elements(:rows)``: one statement, one round
trip and one text parameter per batch, where executemany binds and runs every row on its
own, and an array per column has asyncpg inspect every value (both several times slower
for a thousand rows). The array is read as ``jsonb``, parsed once: ``json`` would parse a
row's text again for each of its columns (three times slower). SQLite runs in process,
where neither costs a round trip: it keeps ``IN`` and executemany.

Values are Python values of the column types, as SQLAlchemy binds them: text, numbers,
booleans, None, aware datetimes, Decimals, and for a JSON column what it holds. Defaults
computed in Python (``Column(default=…)``) are not applied, so rows must give those columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, TextClause, any_, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession


def is_postgres(session: AsyncSession) -> bool:
    """Whether the session's database takes the array forms (else: SQLite's)."""
    return session.get_bind().dialect.name == "postgresql"


def one_of(session: AsyncSession, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """``column IN values``, as PostgreSQL runs it best (``= ANY(array)``)."""
    result: ColumnElement[bool]
    if is_postgres(session):
        result = column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    else:
        result = column.in_(values)
    return result


async def insert_rows(
    session: AsyncSession,
    table: Table,
    columns: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
    returning: tuple[str, ...] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (values of ``columns``, in that order) into ``table``; the
    ``returning`` columns of the inserted rows, in no particular order (give a key among
    them to match them up). The caller commits; IntegrityError as for one INSERT."""
    if not rows:
        return []
    missing = [c.name for c in table.c if c.default is not None and c.name not in columns]
    if missing:
        raise ValueError(f"rows for {table.name} must give the defaulted columns {missing}")
    if not is_postgres(session):
        statement = insert(table)
        given = [dict(zip(columns, row, strict=True)) for row in rows]
        if returning:  # SQLite batches an INSERT … RETURNING without sorting into one
            found = await session.execute(
                statement.returning(*(table.c[name] for name in returning)), given
            )
            return [tuple(row) for row in found]
        await session.execute(statement, given)
        return []
    sql = _json_insert(session.get_bind().dialect, table, columns, returning)
    payload = json.dumps(rows, ensure_ascii=False, default=_json_value)
    result = await session.execute(sql, {"rows": payload})
    return [tuple(row) for row in result] if returning else []


def _json_value(value: Any) -> str:
    """What JSON has no type for, as PostgreSQL reads it back (ISO 8601, decimal text)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


_COLLATE = re.compile(r' COLLATE "[^"]*"$')


@cache
def _json_insert(
    dialect: Dialect, table: Table, columns: tuple[str, ...], returning: tuple[str, ...]
) -> TextClause:
    """``INSERT INTO t (a, b) SELECT CAST(r->>0 AS type), CAST(r->1 AS JSON) FROM
    jsonb_array_elements(:rows) AS r``: a JSON column takes its element, the others cast its
    text."""
    quote = dialect.identifier_preparer.quote
    picked = []
    for index, name in enumerate(columns):
        kind = table.c[name].type
        if isinstance(kind, JSON):
            picked.append(f"CAST(r->{index} AS JSON)")
        else:
            # a cast takes no collation: the column's own applies to what is stored
            cast = _COLLATE.sub("", kind.compile(dialect=dialect))
            picked.append(f"CAST(r->>{index} AS {cast})")
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in columns)}) "
        f"SELECT {', '.join(picked)} FROM jsonb_array_elements(CAST(:rows AS JSONB)) AS r"
    )
    if returning:
        sql += " RETURNING " + ", ".join(quote(name) for name in returning)
    return text(sql)
