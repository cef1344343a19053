"""Real servers on loopback for the length of a test: started, waited for, always stopped."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(argv: list[str], health: str, env: dict[str, str], log: Path,
                   timeout: float = 180) -> Iterator[subprocess.Popen]:
    """Start ``argv``, wait until ``health`` answers, yield the process, then stop it."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(health, timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{argv[0]} did not start: {log.read_text()[-2000:]}") from None
                    time.sleep(1)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def served_champion(ws, log: Path, name: str = "medimg-classifier") -> Iterator[str]:
    """The workspace's champion behind a real `mlflow models serve`; yields its base URL."""
    import os
    import sys

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "MLFLOW_TRACKING_URI": f"sqlite:///{ws.mlflow_db}"})
    port = free_port()
    argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    with running_server(argv, f"http://127.0.0.1:{port}/ping", env, log, timeout=180):
        yield f"http://127.0.0.1:{port}"
