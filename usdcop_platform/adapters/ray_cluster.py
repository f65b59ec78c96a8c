"""Ray: joining a cluster, and a local multi-node cluster started as separate processes.

`connect(address)`: `address` (or RAY_ADDRESS) joins an existing cluster (KubeRay in production);
without either, a local Ray instance is started inside this process with `num_cpus` CPUs.

`LocalCluster` starts `ray start --head` and `ray start --address` worker nodes as separate
process groups on loopback (NODE_IP; `--block`, so each node lives exactly as long as its process) and
stops them by process group: never `ray stop`, which would stop every Ray node on the machine.
Every port is chosen free at start, so two clusters (two test runs) never collide.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE_BYTES = 80 * 2**20  # small: trials exchange arrays of a few MB, not datasets
START_TIMEOUT_S = 150.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_range(width: int = 40) -> tuple[int, int]:
    """A block of `width` consecutive ports that are free now (for Ray's worker ports)."""
    for _ in range(50):
        start = _free_port()
        if start + width >= 65000:
            continue
        ok = True
        for p in range(start, start + width):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return start, start + width - 1
    raise RuntimeError("no free block of ports for Ray workers")


def ray_executable() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def connect(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """ray.init on `address` / RAY_ADDRESS, or a local instance; returns where it connected."""
    import ray

    target = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return target or "local"
    kwargs = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    if target:
        ray.init(address=target, **kwargs)
        return target
    ray.init(num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES, **kwargs)
    return "local"


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


# Loopback, but not 127.0.0.1: `ray start` replaces "127.0.0.1"/"localhost" with the machine's
# routable address (services.resolve_ip_for_localhost), so its agents would listen and be reached on
# the external interface. Any 127.x address stays on the loopback device.
NODE_IP = "127.0.0.2"


@dataclass
class LocalCluster:
    """A head node and `workers` worker nodes, `cpus_per_node` CPUs each, as separate processes."""

    workers: int = 1
    cpus_per_node: int = 1
    object_store_bytes: int = OBJECT_STORE_BYTES
    port: int = 0
    temp_dir: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    _own_temp: bool = False

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    @property
    def nodes(self) -> int:
        return 1 + self.workers

    def _node(self, args: list[str]) -> subprocess.Popen:
        lo, hi = _free_range()
        cmd = [
            ray_executable(), "start", "--block", "--disable-usage-stats", "--node-ip-address", NODE_IP,
            "--num-cpus", str(self.cpus_per_node), "--object-store-memory", str(self.object_store_bytes),
            "--min-worker-port", str(lo), "--max-worker-port", str(hi),
            "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
            "--runtime-env-agent-port", str(_free_port()), *args,
        ]
        log = open(Path(self.temp_dir or tempfile.gettempdir()) / f"ray-node-{len(self.processes)}.log", "wb")
        env = _local_env()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.processes.append(proc)
        return proc

    def start(self) -> "LocalCluster":
        if self.temp_dir is None:
            # Not under pytest's basetemp: concurrent pytest sessions rotate (delete) old basetemps,
            # and a Ray session whose sockets vanish dies.
            self.temp_dir = Path(tempfile.mkdtemp(prefix="usdcop-ray-"))
            self._own_temp = True
        self.port = self.port or _free_port()
        self._node([
            "--head", "--port", str(self.port), "--include-dashboard", "false",
            "--ray-client-server-port", str(_free_port()), "--dashboard-port", str(_free_port()),
            "--temp-dir", str(self.temp_dir),
        ])
        try:
            self._wait_for_cpus(self.cpus_per_node, head_only=True)
            for _ in range(self.workers):
                self._node(["--address", self.address])
            self._wait_for_cpus(self.nodes * self.cpus_per_node)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_cpus(self, cpus: int, *, head_only: bool = False) -> None:
        """Poll `ray status`-equivalent: the GCS answers and the cluster has `cpus` CPUs."""
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = (
            "import ray,sys;ray.init(address=sys.argv[1],logging_level='ERROR',log_to_driver=False);"
            "print(int(ray.cluster_resources().get('CPU',0)))"
        )
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.poll() is not None:
                    raise RuntimeError(f"ray node exited with {p.returncode} (logs in {self.temp_dir})")
            out = subprocess.run(
                [sys.executable, "-c", probe, self.address], capture_output=True, text=True, timeout=60,
                env=_local_env(),
            )
            if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= cpus:
                return
            time.sleep(0.5)
        raise TimeoutError(f"ray cluster at {self.address} did not reach {cpus} CPUs in {START_TIMEOUT_S:.0f}s")

    def kill_worker_processes(self) -> int:
        """SIGKILL every Ray worker process (the ones running tasks) of this cluster: a node failure
        of the kind a preempted machine causes. Returns how many were killed."""
        import psutil

        killed = 0
        for node in self.processes:
            try:
                parent = psutil.Process(node.pid)
            except psutil.NoSuchProcess:
                continue
            for child in parent.children(recursive=True):
                try:
                    if _is_task_worker(child):
                        child.kill()
                        killed += 1
                except psutil.NoSuchProcess:
                    pass
        return killed

    def _members(self) -> list:
        """Every live process of this cluster: the node processes, their descendants, and the Ray
        workers (they start their own sessions) recognised by this cluster's temp dir."""
        import psutil

        out: dict[int, psutil.Process] = {}
        for p in self.processes:
            try:
                root = psutil.Process(p.pid)
                out[root.pid] = root
                out.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if marker in " ".join(proc.info["cmdline"] or ()):
                    out[proc.pid] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return [p for p in out.values() if _alive(p)]

    def stop(self) -> None:
        """SIGTERM every process of the cluster, SIGKILL what is left after a few seconds."""
        for sig, wait in ((signal.SIGTERM, 6.0), (signal.SIGKILL, 5.0)):
            members = self._members()
            for proc in members:
                try:
                    proc.send_signal(sig)
                except Exception:  # already gone
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(_alive(p) for p in members):
                time.sleep(0.2)
        for p in self.processes:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()
        if self._own_temp and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _local_env() -> dict[str, str]:
    """Environment of the local cluster's processes: no RAY_ADDRESS (they are the cluster), and
    token authentication explicitly off (the cluster is reached on loopback only). Without the
    explicit mode, a token that an earlier local `ray.init()` wrote to ~/.ray/auth_token makes
    the nodes and their clients disagree on authentication."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def _is_task_worker(proc) -> bool:
    """A Ray worker process running a task (title `ray::<task>`), not a raylet or an agent."""
    name = proc.name()
    if name.startswith("ray::"):
        return "Agent" not in name and name != "ray::IDLE"
    args = proc.cmdline()
    return len(args) > 1 and args[1].endswith("default_worker.py")


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
