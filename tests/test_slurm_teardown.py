"""The SLURM fixture stops everything it started (issue 14): after a timed-out test a slurmstepd
(which detaches from slurmd, so it is no child of ours) and its job stayed alive. Here a job runs
when slurmctld dies first (no scancel possible, as after a crash or a kill), and `stop()` still
leaves no process of the cluster behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable, _alive

pytestmark = pytest.mark.slurm


def test_stop_ends_daemons_job_steps_and_jobs_even_without_slurmctld(tmp_path):
    (tmp_path / "slurm").mkdir()
    cluster = SlurmCluster(tmp_path / "slurm")
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"SLURM cannot start here: {exc}")
    try:
        job = cluster.run("sbatch", "--parsable", "-o", str(tmp_path / "job.out"), "--wrap", "sleep 600").strip()
        end = time.monotonic() + 120
        while time.monotonic() < end and "RUNNING" not in cluster.run("squeue", "-h", "-j", job, "-o", "%T"):
            time.sleep(0.5)
        assert "RUNNING" in cluster.run("squeue", "-h", "-j", job, "-o", "%T")
        time.sleep(1)
        daemons = {p.pid for p in cluster.procs}
        others = [pid for pid in cluster.leftovers() if pid not in daemons]
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in others]
        assert any(b"slurmstepd" in c for c in commands) and any(b"sleep 600" in c for c in commands), commands
        slurmctld = next(p for p in cluster.procs if b"slurmctld" in Path(f"/proc/{p.pid}/cmdline").read_bytes())
        os.kill(slurmctld.pid, signal.SIGKILL)  # the scheduler is gone: the jobs cannot be cancelled through it
        slurmctld.wait()
    finally:
        cluster.stop()
    assert cluster.leftovers() == []
    assert not any(_alive(pid) for pid in [*daemons, *others])
