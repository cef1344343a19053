"""The review app for tests: a workspace with a registered champion, reviewers, and the app
served by a real uvicorn on a loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medimg.registry.stage import run_register
from medimg.workspace import Workspace, open_workspace
from support.servers import free_port
from support.workspaces import copy_workspace

# gates every tiny model passes, and a margin that promotes every challenger
OPEN_GATES = {"gates": {"min_f1": 0.0, "min_recall": 0.0, "noninferiority_margin": 1.0}}


def champion_workspace(
    templates: Any, dest: Path, serve: dict[str, Any] | None = None
) -> Workspace:
    """A copy of the session's evaluated template at ``dest`` with its model registered as
    version 1 and champion (the gates are the only params register reads, so the copy stands);
    ``serve`` overrides the ``serve`` params."""
    from conftest import write_params

    ws = copy_workspace(templates.through("evaluate"), dest)
    write_params(ws.root, {**OPEN_GATES, "serve": {"model_poll_seconds": 0, **(serve or {})}})
    ws = open_workspace(ws.root)
    result = run_register(ws, ws.config)
    assert result.version == "1" and "champion" in result.aliases, result
    return ws


def png_bytes(size: int = 96, seed: int = 0) -> bytes:
    """A textured grey PNG that passes ingest's checks (not blank, not too small)."""
    import io

    rng = np.random.default_rng(seed)
    pixels = (rng.random((size, size)) * 200 + 20).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
