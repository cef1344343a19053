"""Workspace locks: DVC commands queue instead of failing on DVC's repo lock, and a lock another
process holds is refused at once when the caller will not wait."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from medimg.locks import LockBusy, lock_path, workspace_lock
from medimg.versioning import run_dvc


def test_a_dvc_command_during_a_long_repro_waits_instead_of_failing(tmp_path):
    """Unqueued, the second command fails on DVC's own lock ("cannot perform the command
    because another DVC process is running") while the first still runs its stage."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          slow:
            cmd: sleep 6 && cp in.txt out.txt
            deps: [in.txt]
            outs: [out.txt]
        """))
    (tmp_path / "in.txt").write_text("a\n")

    def call(args: tuple[float, ...]) -> str:
        time.sleep(args[0])
        return run_dvc(tmp_path, *args[1:])  # raises WorkspaceError when DVC refuses

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(call, [(0, "repro", "slow"), (2, "status", "--json")]))
    assert json.loads(done[1]) == {}  # it waited for the repro, then found all up to date
    assert (tmp_path / "out.txt").read_text() == "a\n"


def test_a_lock_held_by_another_process_is_refused_without_waiting(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys, time
        from pathlib import Path
        from medimg.locks import workspace_lock
        with workspace_lock(Path({str(tmp_path)!r}), "retrain"):
            print("held", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match="another retrain is running"), \
                workspace_lock(tmp_path, "retrain", timeout=0, busy="another retrain is running"):
            pass
    finally:
        holder.communicate("done\n", timeout=30)
    with workspace_lock(tmp_path, "retrain", timeout=0):  # free once the holder ended
        assert lock_path(tmp_path, "retrain").is_file()


def test_the_lock_is_reentrant_within_a_thread(tmp_path):
    with workspace_lock(tmp_path, "dvc"), workspace_lock(tmp_path, "dvc", timeout=0):
        pass
