"""The run launcher `dagster dev` uses (dagster.yaml), with the worker health check that run
monitoring needs.

A run executed in the process that asked for it (`bm-assets run`, `dagster asset materialize`)
has no launcher watching it: killed with -9 (or by the OOM killer), it stays STARTED forever, and
with `max_concurrent_runs: 1` every queued run, schedule tick and backfill waits behind it.
Dagster's DefaultRunLauncher cannot tell whether a run's process lives, so run monitoring skips
STARTED runs. This launcher answers from the pid of the process that started the run (Dagster
records it on the run's RUN_START event), so the daemon marks a run whose process is gone
failed within one poll interval and the queue moves on."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun


def process_alive(pid: int) -> bool:
    """Whether a process runs: a zombie (killed, not yet reaped by its parent) counts as dead."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").exists():  # Linux: the state letter tells zombies apart
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher plus `check_run_worker_health` from the run's process id (same host)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def worker_pid(self, run: DagsterRun) -> int | None:
        """The pid of the process executing the run: the one that logged its RUN_START event."""
        for entry in self._instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START):
            if entry.dagster_event is not None and entry.dagster_event.pid is not None:
                return entry.dagster_event.pid
        return None

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = self.worker_pid(run)
        if pid is None:  # not recorded (yet): nothing to judge by, the run timeouts still apply
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is running")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process {pid} is gone (killed or crashed) while the run was STARTED"
        )
