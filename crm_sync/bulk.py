"""Many rows in a few statements, on both backends: what a bulk import needs.

On PostgreSQL a list of values travels as one array parameter. A key lookup is
``column = ANY(:keys)`` rather than ``IN (:k1, …, :k500)``: one prepared statement whatever
the count, and no parameters to render. Rows go in as ``INSERT … SELECT … FROM unnest(:c1,
:c2, …)``, one array per column that asyncpg encodes in C: one statement and one round trip
per batch, where executemany binds and runs every row on its own (several times slower for
a thousand rows). SQLite runs in process, where neither costs a round trip: it keeps ``IN``
and executemany.

Values are given as SQLAlchemy would bind them for the table (Python values of the column
types); each column's own bind processing (JSON serialisation) is applied here. Defaults
computed in Python (``Column(default=…)``) are not, so rows must give those columns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import cache
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, TextClause, any_, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession


def is_postgres(session: AsyncSession) -> bool:
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
    rows: Sequence[dict[str, Any]],
    returning: tuple[str, ...] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts with the same keys) into ``table``; the ``returning`` columns
    of the inserted rows, in no particular order (give a key among them to match them
    up). The caller commits; IntegrityError as for one INSERT."""
    if not rows:
        return []
    columns = tuple(rows[0])
    missing = [c.name for c in table.c if c.default is not None and c.name not in columns]
    if missing:
        raise ValueError(f"rows for {table.name} must give the defaulted columns {missing}")
    if not is_postgres(session):
        statement = insert(table)
        if returning:  # SQLite batches an INSERT … RETURNING without sorting into one
            found = await session.execute(
                statement.returning(*(table.c[name] for name in returning)), list(rows)
            )
            return [tuple(row) for row in found]
        await session.execute(statement, list(rows))
        return []
    dialect = session.get_bind().dialect
    arrays: dict[str, list[Any]] = {}
    for name in columns:
        values = [row[name] for row in rows]
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        arrays[name] = values if process is None else [process(v) for v in values]
    result = await session.execute(_unnest_insert(dialect, table, columns, returning), arrays)
    return [tuple(row) for row in result] if returning else []


@cache
def _unnest_insert(
    dialect: Dialect, table: Table, columns: tuple[str, ...], returning: tuple[str, ...]
) -> TextClause:
    """``INSERT INTO t (a, b) SELECT u.a, u.b FROM unnest(CAST(:a AS type[]), …) AS u(a, b)``;
    a JSON column travels as text and is cast back."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    arrays, picked = [], []
    for name in columns:
        kind = table.c[name].type
        json = isinstance(kind, JSON)
        arrays.append(f"CAST(:{name} AS {'TEXT' if json else kind.compile(dialect=dialect)}[])")
        picked.append(f"CAST(u.{quote(name)} AS JSON)" if json else f"u.{quote(name)}")
    sql = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {', '.join(picked)} "
        f"FROM unnest({', '.join(arrays)}) AS u({names})"
    )
    if returning:
        sql += " RETURNING " + ", ".join(quote(name) for name in returning)
    return text(sql)
