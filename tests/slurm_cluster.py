"""A throw-away single-node SLURM (munge + slurmctld + slurmd on localhost) for the `slurm` tests.

Debian's `slurm-wlm` and `munge` packages (.ci/run installs them) are started from a slurm.conf
written into a temporary folder; clients find it through SLURM_CONF. Every daemon is started in
the foreground (-D) as our child and stopped by its PID. slurmd's job steps (slurmstepd, which
detaches from slurmd) and the jobs' processes are no children of ours: `stop()` cancels the jobs
while slurmctld is up, then stops the daemons, then finds every process left that carries this
cluster's marker in its environment (the daemons' `SYNTHMED_TEST_SLURM_ROOT`, which slurmstepd
inherits, or the jobs' `SLURM_CONF`) and stops it by PID: a timed-out test left a slurmstepd
running. `stop()` also runs at interpreter exit. `SlurmCluster.start()` raises
`SlurmUnavailable` with the reason when anything is missing or a daemon does not come up (the
fixture turns that into a skip).
"""

from __future__ import annotations

import atexit
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
MARKER = "SYNTHMED_TEST_SLURM_ROOT"  # in the daemons' environment; slurmstepd inherits it


def _ancestors() -> set[int]:
    """This process and its parents (they may carry SLURM_CONF too, and must survive)."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def _processes_with(needles: list[bytes]) -> list[int]:
    """PIDs of our user's processes whose environment holds one of `needles` (not us or our parents)."""
    keep, uid, found = _ancestors(), os.getuid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in keep:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(item in needles for item in environ):
            found.append(int(entry.name))
    return found


class SlurmUnavailable(RuntimeError):
    """SLURM could not be started here (the message says why)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None)


def _free_port() -> int:
    """A TCP port nobody listens on now (two clusters, e.g. parallel test runs, must not share one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running (a zombie, which only waits for its parent to reap it, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512  # leave slurmd's own check some room
    return 1024


class SlurmCluster:
    """munged, slurmctld and slurmd started from files under `root`; `env` is what clients need."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = Path(root), cpus
        os.chmod(self.root, 0o755)  # munged wants its socket folder reachable by all
        self.procs: list[subprocess.Popen] = []
        self.start_seconds = 0.0
        atexit.register(self.stop)  # a test run that ends without fixture teardown still stops it
        self.env = dict(os.environ, **{MARKER: str(self.root)})
        self._stopped = False

    def _conf(self) -> str:
        user = getpass.getuser()
        r = self.root
        return "\n".join([
            "ClusterName=synthmedtest", "SlurmctldHost=localhost", f"SlurmUser={user}", f"SlurmdUser={user}",
            "AuthType=auth/munge", f"AuthInfo=socket={r / 'munge.socket'}",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={r / 'jobcomp.txt'}", "MpiDefault=none", "ReturnToService=2",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}", f"SlurmdLogFile={r / 'slurmd.log'}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1", "MinJobAge=600", "KillWait=5", "InactiveLimit=0",
            "SlurmctldParameters=enable_configless",
            f"NodeName=localhost CPUs={self.cpus} RealMemory={_real_memory_mb()} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO", ""])

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        begin = time.monotonic()
        paths = {name: _which(name) for name in (*DAEMONS, "sbatch", "squeue", "sacct", "scontrol")}
        missing = [n for n, p in paths.items() if p is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
        key = Path("/etc/munge/munge.key")
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "slurm.conf"
        conf.write_text(self._conf())
        self.env["SLURM_CONF"] = str(conf)
        munge_key = self.root / "munge" / "munge.key"
        if key.is_file() and os.access(key, os.R_OK):
            shutil.copy(key, munge_key)
        else:  # our own key: munged only needs one it owns
            munge_key.write_bytes(os.urandom(1024))
        os.chmod(munge_key, 0o600)
        os.chmod(self.root / "munge", 0o700)
        self._spawn([paths["munged"], "-F", "--force", "--key-file", str(munge_key),
                     "--socket", str(self.root / "munge.socket"), "--pid-file", str(self.root / "munged.pid"),
                     "--log-file", str(self.root / "munged.log"), "--seed-file", str(self.root / "munge" / "seed")],
                    "munged")
        self._wait(lambda: (self.root / "munge.socket").exists(), timeout, "munged's socket")
        self._spawn([paths["slurmctld"], "-D", "-i", "-f", str(conf)], "slurmctld")
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld (scontrol ping)")
        self._spawn([paths["slurmd"], "-D", "-f", str(conf), "-N", "localhost"], "slurmd")
        self._wait(lambda: self._ok(["sinfo", "-h", "-o", "%T"], "idle"), timeout, "slurmd (sinfo: node idle)")
        self.start_seconds = time.monotonic() - begin
        return self

    def _spawn(self, argv: list[str], name: str) -> None:
        log = open(self.root / f"{name}.stdout", "w")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def _ok(self, argv: list[str], needle: str) -> bool:
        try:
            out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=10).stdout
        except subprocess.TimeoutExpired:
            return False
        return needle in out

    def _wait(self, check, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if check():
                return
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.3)
        self.stop()
        logs = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-1500:]
                       for p in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.stdout")))
        raise SlurmUnavailable(f"{what} did not come up within {timeout:.0f} s{logs}")

    def stop(self) -> None:
        """Stop the jobs, the daemons and every process left of this cluster (see the module docstring)."""
        if self._stopped:
            return
        self._stopped = True
        if self.procs and all(p.poll() is None for p in self.procs):  # slurmctld can still cancel the jobs
            subprocess.run(["scancel", "--full", "-u", getpass.getuser()], env=self.env, capture_output=True,
                           timeout=15)
            end = time.monotonic() + 15
            while time.monotonic() < end and self._ok(["squeue", "-h", "-o", "%i"], "\n"):
                time.sleep(0.5)
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged: by the PIDs we started
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        self._stop_leftovers()

    def _stop_leftovers(self, grace: float = 10.0) -> list[int]:
        """SIGTERM, then SIGKILL, every process still carrying this cluster's marker; returns their PIDs."""
        left = _processes_with(self._markers())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + grace
            while left and time.monotonic() < end:
                left = [pid for pid in left if _alive(pid)]
                time.sleep(0.2)
            if not left:
                break
        return left

    def leftovers(self) -> list[int]:
        """PIDs of processes that still carry this cluster's marker (empty after `stop()`)."""
        return [pid for pid in _processes_with(self._markers()) if _alive(pid)]

    def _markers(self) -> list[bytes]:
        found = [f"{MARKER}={self.root}".encode()]
        if "SLURM_CONF" in self.env:  # the jobs' processes (sbatch exports the submitter's environment)
            found.append(f"SLURM_CONF={self.env['SLURM_CONF']}".encode())
        return found

    def run(self, *argv: str) -> str:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=True).stdout

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait until squeue lists no job (all finished, failed or cancelled)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.run("squeue", "-h", "-o", "%i").strip():
                return
            time.sleep(1.0)
        raise TimeoutError(f"jobs still queued after {timeout} s:\n{self.run('squeue')}")
