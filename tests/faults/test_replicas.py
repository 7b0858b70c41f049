"""Several API server replicas on one PostgreSQL database and one Redis (docs/operations.md,
"Topology"): two ``orch server start`` processes, each with all its services, behind a round-robin
TCP balancer (what a Kubernetes Service or any load balancer does) that the two process workers
and their flow runs use; several clients create runs through both replicas directly; one replica
is killed with SIGKILL part way. Every accepted run must execute exactly once and end COMPLETED."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import FaultStack, PrivatePostgres, PrivateRedis
from tests.harness import free_port, postgres_env, wait_until

pytestmark = pytest.mark.faults

CLIENTS, RUNS_PER_CLIENT = 4, 50  # 200 runs
KILL_AFTER = CLIENTS * RUNS_PER_CLIENT // 3  # replica A dies once this many runs were accepted

FLOW = '''
import os
import pathlib
import uuid

from orchestrator import flow


@flow
def mark(token: str, marks: str) -> str:
    """One file per execution: the test counts a token's files."""
    (pathlib.Path(marks) / f"{token}.{uuid.uuid4().hex}").write_text(os.environ.get("ORCH_FLOW_RUN_ID", ""))
    return token
'''


class Balancer:
    """Round-robin TCP forwarding on 127.0.0.1:``port``: each new connection goes to the next
    backend that accepts it; a connection whose backend dies is closed, so its client reconnects
    (and lands on a live backend)."""

    def __init__(self, port: int, backends: Sequence[int]) -> None:
        self.port, self.backends = port, list(backends)
        self._next = itertools.cycle(range(len(self.backends)))
        self._listener = socket.create_server(("127.0.0.1", port), backlog=256)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="balancer", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        start = next(self._next)
        for i in range(len(self.backends)):
            try:
                backend = socket.create_connection(("127.0.0.1", self.backends[(start + i) % len(self.backends)]),
                                                   timeout=2)
                break
            except OSError:
                continue
        else:
            client.close()  # no backend alive: the client sees the connection drop and retries
            return
        backend.settimeout(None)
        with self._lock:
            self._open |= {client, backend}
        threading.Thread(target=self._pipe, args=(backend, client), daemon=True).start()
        self._pipe(client, backend)

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        # Either side gone: close both, as a proxy does (the other pipe thread ends on its recv).
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with self._lock:
            self._open -= {source, target}

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def stack(tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis) -> Iterator[FaultStack]:
    """The private PostgreSQL + Redis with the default liveness settings: this test is about a
    replica's death, not about judging silent holders fast (two workers starting 200 flow-run
    processes on a busy 2-core machine miss 0.5 s heartbeats)."""
    private_redis.flushall()
    database = private_postgres.create_database(f"replicas_{uuid.uuid4().hex[:8]}")
    stack = FaultStack(tmp_path, {**postgres_env(database, private_redis.url), "PYTHONUNBUFFERED": "1"})
    yield stack
    stack.stop()


@contextlib.contextmanager
def two_replicas(stack: FaultStack) -> Iterator[tuple[Any, Any]]:
    """Replicas A and B on ports of their own, and the balancer on the stack's port (its
    ``ORCH_API_URL``, so the CLI, workers and flow runs go through it)."""
    ports = [free_port(), free_port()]
    replicas = [stack.spawn(f"server-{name}", [*stack.orch_argv, "server", "start", "--port", str(port)],
                            cwd=stack.project) for name, port in zip("ab", ports, strict=True)]
    balancer = Balancer(stack.port, ports)
    try:
        import urllib.request

        for port in ports:
            wait_until(f"replica on port {port}", lambda p=port: urllib.request.urlopen(
                f"http://127.0.0.1:{p}/api/health", timeout=2).status == 200, 90, 0.05,
                alive=stack.check_alive, ignore=(OSError,), describe=stack.all_logs)
        yield replicas, ports
    finally:
        stack.stop()  # workers first: with the balancer gone they would only log refused claims
        balancer.close()


# Creating 200 runs takes seconds; starting 200 flow-run processes takes the rest: about 40 s on an
# idle 2-core machine, 120 s at a load average of 20.
@pytest.mark.timeout(400)
def test_two_replicas_one_killed_every_accepted_run_runs_once(stack: FaultStack) -> None:
    from orchestrator.client import Client
    from orchestrator.errors import ServerUnreachable
    from orchestrator.schemas import FlowRunCreate

    marks = stack.project / "marks"
    marks.mkdir()
    (stack.project / "flows.py").write_text(FLOW)
    with two_replicas(stack) as (replicas, ports):
        assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
        deployed = stack.python("from flows import mark\nprint(mark.deploy(name='m', work_pool_name='local'))")
        assert deployed.returncode == 0, deployed.stderr
        deployment_id = uuid.UUID(deployed.stdout.strip().splitlines()[-1])
        for name in ("worker-1", "worker-2"):
            stack.start_worker("local", "--limit", "8", "--name", name, name=name)

        accepted: dict[str, str] = {}  # token -> run id, from a 201 (or a repeated key's 200)
        retried: Counter[str] = Counter()  # how each retry was answered
        lock = threading.Lock()
        a_dead = threading.Event()

        def create(client_index: int) -> None:
            clients = [Client(f"http://127.0.0.1:{port}/api", timeout=30) for port in ports]  # no retries
            try:
                for i in range(RUNS_PER_CLIENT):
                    token = f"c{client_index}-{i}"
                    # The idempotency key makes a retry of a request whose answer was lost safe.
                    request = FlowRunCreate(parameters={"token": token, "marks": str(marks)}, idempotency_key=token)
                    first = 1 if a_dead.is_set() else (client_index + i) % 2  # both replicas while A lives
                    try:
                        run = clients[first].create_flow_run(deployment_id, request)
                    except ServerUnreachable:
                        assert first == 0, "replica B, the survivor, must answer"
                        run = clients[1].create_flow_run(deployment_id, request)  # not accepted: try the survivor
                        with lock:
                            retried["to B"] += 1
                    with lock:
                        accepted[token] = str(run.id)
            finally:
                for client in clients:
                    client.close()

        threads = [threading.Thread(target=create, args=(c,), name=f"client-{c}") for c in range(CLIENTS)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        wait_until(f"{KILL_AFTER} runs accepted", lambda: len(accepted) >= KILL_AFTER, 60, 0.01)
        stack.kill(replicas[0])  # SIGKILL: no shutdown, its open requests and services die with it
        a_dead.set()
        killed_at = time.monotonic()
        executed_before_kill = len(list(marks.iterdir()))
        for thread in threads:
            thread.join(timeout=90)
        assert len(accepted) == CLIENTS * RUNS_PER_CLIENT, f"accepted {len(accepted)}"

        survivor = Client(f"http://127.0.0.1:{ports[1]}/api", timeout=30)
        runs: dict[str, Any] = {}

        def all_completed() -> bool:
            page = survivor.list_flow_runs(deployment_id=str(deployment_id), limit=1000)
            runs.clear()
            runs.update({str(r.id): r for r in page.items})
            return len(runs) == len(accepted) and all(r.state.type == "COMPLETED" for r in runs.values())

        def describe() -> str:
            states = Counter(f"{r.state.type}/{r.state.name}" for r in runs.values())
            return f"{len(runs)} runs: {dict(states)}\n{stack.all_logs()}"

        wait_until("every accepted run COMPLETED", all_completed, 240, 0.2, alive=stack.check_alive,
                   describe=describe)
        done_at = time.monotonic()
        survivor.close()

    # No run the clients did not get back (a lost answer's run was found again by its key) ...
    assert set(runs) == set(accepted.values())
    # ... and each ran exactly once: one mark per token, written by its own run.
    executions = Counter(p.name.split(".")[0] for p in marks.iterdir())
    assert executions == Counter({token: 1 for token in accepted}), \
        {t: n for t, n in executions.items() if n != 1} or set(accepted) - set(executions)
    by_run = {p.read_text(): p.name.split(".")[0] for p in marks.iterdir()}
    assert by_run == {run_id: token for token, run_id in accepted.items()}
    assert executed_before_kill < len(accepted)  # the kill came part way, with runs still to start
    print(f"\n[replicas] {len(accepted)} runs ({executed_before_kill} had run before A's kill, "
          f"{retried['to B']} creates retried on B) COMPLETED "
          f"{done_at - began:.1f} s after the first create, {done_at - killed_at:.1f} s after the kill")
