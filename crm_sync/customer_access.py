"""Is this customer in an agent's own work? The store's half of screenpop.access.

An agent's work is what the store says they did or were given: a timeline row they wrote or
handled (a call, an outcome, a note, a contact correction: ``agent`` is them) or a follow-up
owned by them or by one of their queues (``owner``, see crm_sync.followups). One indexed read
of the customer's rows, stopped at the first that matches.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import Interaction


async def in_agent_work(
    sessions: async_sessionmaker[AsyncSession],
    customer_id: int,
    *,
    agent: str,
    owners: Sequence[str],
) -> bool:
    """Whether ``agent`` handled or wrote anything on the customer's timeline, or a follow-up
    of the customer is owned by one of ``owners`` (the agent and their queues). Raises what
    the database raises."""
    mine = or_(
        Interaction.agent == agent,
        and_(Interaction.kind == "followup", Interaction.owner.in_(list(owners))),
    )
    query = select(Interaction.id).where(Interaction.customer_id == customer_id, mine).limit(1)
    async with sessions() as session:
        return await session.scalar(query) is not None
