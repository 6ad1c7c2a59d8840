"""The run launcher `dagster dev` uses (dagster.yaml), with the worker health check that run
monitoring needs.

Dagster's DefaultRunLauncher starts each run in a local process but cannot tell whether that
process still lives, so run monitoring never looks at STARTED runs: a run worker killed with -9
(or by the OOM killer) leaves its run STARTED forever, and with `max_concurrent_runs: 1` every
queued run, schedule tick and backfill waits behind it. This launcher answers the health check
from the worker's pid (recorded by Dagster as the run's "Started process for run" event), so the
daemon marks such a run failed within one poll interval and the queue moves on."""

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
    """DefaultRunLauncher plus `check_run_worker_health` from the worker's pid (same host)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def worker_pid(self, run: DagsterRun) -> int | None:
        """The pid of the run's worker process, from the engine event Dagster logs when it starts."""
        for entry in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
            event = entry.dagster_event
            data = event.engine_event_data if event is not None else None
            pid = data.metadata.get("pid") if data is not None else None
            if pid is not None and str(entry.user_message).startswith("Started process for run"):
                return int(pid.value)
        return None

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = self.worker_pid(run)
        if pid is None:  # not recorded (yet): nothing to judge by, the run timeouts still apply
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is running")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed) while the run was STARTED"
        )
