"""``bench/run_timeline.py --statements``: the hook its ``sitecustomize`` adds after its marks (code
as text, run inside the server; it uses the marks' ``_OUT`` and chains their ``_patch``): the claim's
and each state report's service, commit excluded, per statement (SQLAlchemy's cursor events), with
the thread's CPU, its wait for a core, the server's other threads' CPU and the PostgreSQL backend's
CPU and wait (``/proc/.../schedstat``), and the commit on its own."""

STATEMENTS = r'''
import threading

_STEP = threading.local()  # the service step this thread is in: (run, kind, statements so far)


def _sched(path="/proc/thread-self/schedstat"):
    # the kernel's per-task counters: ns on a CPU, ns waiting on a run queue (runnable, no CPU free)
    try:
        with open(path) as f:
            cpu, queued, _ = f.read().split()
        return int(cpu) / 1e6, int(queued) / 1e6
    except (OSError, ValueError):
        return 0.0, 0.0


def _others():
    # CPU of the process's other threads (the event loop, the hub's...): who may hold the GIL;
    # the event loop's (uvicorn's, the main thread: its id is the process's) apart
    me = threading.get_native_id()
    total = loop = 0.0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            cpu = _sched(f"/proc/self/task/{tid}/schedstat")[0]
            total += cpu
            if int(tid) == os.getpid():
                loop = cpu
    return total, loop


def _now(end=False, others=True):
    # thread_time, not schedstat, for the thread's own CPU: the kernel updates a running task's
    # schedstat CPU only at a tick or a switch; its run-queue wait is exact once it runs. The other
    # threads' CPU (a scan of /proc, ~0.1 ms) only for a step and its commit, not per statement.
    if end:
        wall, cpu, queued = time.perf_counter(), time.thread_time(), _sched()[1]
        return wall, cpu * 1e3, queued, *(_others() if others else (0.0, 0.0))
    before, queued = _others() if others else (0.0, 0.0), _sched()[1]
    return time.perf_counter(), time.thread_time() * 1e3, queued, *before


def _in_step(fn, kind_of):
    @functools.wraps(fn)
    def step(*args, **kwargs):
        _STEP.now = [args[1], kind_of(args), 0]
        t0 = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(f"{_STEP.now[1]}: all", t0)
            _STEP.last = _STEP.now[1]
            _STEP.now = None
    return step


def _record(name, t0, backend=None, others=True):
    t1 = _now(end=True, others=others)
    wall, cpu, queued, others, loop = ((b - a) * (1e3 if i == 0 else 1) for i, (a, b) in enumerate(zip(t0, t1)))
    b_cpu = b_queued = 0.0
    if backend is not None:
        pid, (c0, q0) = backend
        c1, q1 = _sched(f"/proc/{pid}/schedstat")
        b_cpu, b_queued = c1 - c0, q1 - q0
        with open(_OUT + ".backends", "a") as f:
            f.write(f"{pid} {name}\n")
    with open(_OUT + ".statements", "a") as f:
        f.write(f"{name} {wall:.4f} {cpu:.4f} {queued:.4f} {others:.4f} {loop:.4f} {b_cpu:.4f} {b_queued:.4f}\n")


def _backend(cursor):
    try:
        pid = cursor.connection.info.backend_pid
    except Exception:
        return None
    return pid, _sched(f"/proc/{pid}/schedstat")


def _before_statement(conn, cursor, statement, *args):
    if getattr(_STEP, "now", None):
        _STEP.now[2] += 1
        _STEP.backend = _backend(cursor)
        _STEP.t = _now(others=False)


def _after_statement(conn, cursor, statement, *args):
    if getattr(_STEP, "now", None):
        _record(f"{_STEP.now[1]}: statement {_STEP.now[2]} ({statement.split()[0]})", _STEP.t, _STEP.backend,
                others=False)


def _timed_commit(do_commit):
    @functools.wraps(do_commit)
    def commit(self, dbapi_connection):
        kind = getattr(_STEP, "last", None)
        if kind is None:
            return do_commit(self, dbapi_connection)
        _STEP.last = None
        raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)  # the pool's proxy: its own .info
        pid = raw.info.backend_pid
        backend = pid, _sched(f"/proc/{pid}/schedstat")
        t0 = _now()
        try:
            return do_commit(self, dbapi_connection)
        finally:
            _record(f"{kind}: commit", t0, backend)
    return commit


_patch_marks = _patch


def _patch(name, module):
    _patch_marks(name, module)
    if name == "orchestrator.server.services.claims":
        from sqlalchemy import event
        from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
        from sqlalchemy.engine import Engine
        event.listen(Engine, "before_cursor_execute", _before_statement)
        event.listen(Engine, "after_cursor_execute", _after_statement)
        pg_psycopg.PGDialect_psycopg.do_commit = _timed_commit(pg_psycopg.PGDialect_psycopg.do_commit)
        module.claim = _in_step(module.claim, lambda a: "claim")
    elif name == "orchestrator.server.services.flow_runs":
        module.set_state = _in_step(module.set_state, lambda a: str(a[2].type).rsplit(".", 1)[-1])
'''
