"""The assembled product (:func:`cti_app.stack.run_stack`), in-process against the simulator."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from cti.settings import PbxSettings, Settings, StoreSettings
from cti_app.stack import run_stack
from pbxsim import AmiServer


async def test_start_up_objects_are_frozen_out_of_the_collectors_reach(tmp_path: Path) -> None:
    server = AmiServer(auth_delay=0.0)
    await server.start()
    settings = Settings(
        pbxs=(PbxSettings(name="sim", port=server.port, secret=server.secret),),
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}"),
    )
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_stack(
            settings, accounts=None, on_ready=lambda at: ready.set_result(gc.get_freeze_count())
        )
    )
    try:
        assert await asyncio.wait_for(ready, 10) > 50_000  # modules, settings, the app
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
        await server.stop()
