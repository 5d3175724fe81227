"""A real single-node SLURM cluster for the tests: a private munged, slurmctld and slurmd in a temp folder.

Debian's `slurm-wlm` and `munge` (installed by .ci/run). Everything lives in the folder (key, socket,
state, spool, logs, pid files) on free ports, so the test never touches a system cluster's config;
`proctrack/linuxproc` and `task/none` need no cgroups. Running the daemons needs root (SlurmUser=root),
as on CI. Where the binaries are missing outside CI the fixture skips with a loud reason; in CI
(CI=true) their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue")
SBIN = ("/usr/sbin", "/usr/local/sbin")


def find(binary: str) -> str | None:
    return shutil.which(binary) or next((f"{d}/{binary}" for d in SBIN if os.access(f"{d}/{binary}", os.X_OK)), None)


def require_slurm() -> dict[str, str]:
    """Paths of the binaries; pytest.fail in CI when one is missing, else a loud skip."""
    paths = {b: find(b) for b in BINARIES}
    missing = [b for b, p in paths.items() if p is None]
    reason = None
    if missing:
        reason = f"SLURM binaries not installed ({', '.join(missing)}): apt-get install slurm-wlm munge"
    elif os.geteuid() != 0:
        reason = "a test SLURM cluster runs its daemons as root (SlurmUser=root); not root here"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the real SLURM test: {reason}")
        pytest.skip(f"NOT TESTED: the real SLURM job array. {reason}")
    return paths  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return int(line.split()[1]) // 1024 // 2
    return 1000


def write_config(root: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    lines = {
        "ClusterName": "kneeoatest", "SlurmctldHost": host, "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(), "SlurmUser": "root", "SlurmdUser": "root", "AuthType": "auth/munge",
        "AuthInfo": f"socket={root / 'munge.sock'}", "CredType": "cred/munge",
        "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "JobAcctGatherType": "jobacct_gather/none",
        "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_Core", "ReturnToService": 2, "MpiDefault": "none",
        "StateSaveLocation": root / "state", "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid", "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log", "SlurmdLogFile": root / "slurmd.log",
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    text += f"NodeName={host} CPUs={os.cpu_count() or 1} RealMemory={_memory_mb()} State=UNKNOWN\n"
    text += f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
    (root / "state").mkdir(exist_ok=True)
    (root / "spool").mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


class Cluster:
    """Start munged, slurmctld and slurmd; `stop()` ends exactly the daemons it started (by pid file)."""

    def __init__(self, root: Path, paths: dict[str, str]):
        self.root, self.paths = root, paths
        self.conf = write_config(root)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 60.0) -> Cluster:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        r = self.root
        subprocess.run([self.paths["munged"], "--force", f"--socket={r / 'munge.sock'}", f"--key-file={key}",
                        f"--log-file={r / 'munged.log'}", f"--pid-file={r / 'munged.pid'}",
                        f"--seed-file={r / 'munged.seed'}"], check=True, env=self.env, timeout=30)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([self.paths[daemon], "-f", str(self.conf)], check=True, env=self.env, timeout=30)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run([self.paths["sinfo"], "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up: {self.logs()}")

    def queue_empty(self) -> bool:
        out = subprocess.run([self.paths["squeue"], "-h"], capture_output=True, text=True, env=self.env)
        return out.returncode == 0 and not out.stdout.strip()

    def wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue_empty():
                return
            time.sleep(1.0)
        raise TimeoutError(f"jobs still queued after {timeout_s} s: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.root / f"{name}.pid"
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                continue
