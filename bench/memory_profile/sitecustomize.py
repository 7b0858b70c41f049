"""Idle-memory profile for bench/memory_floor.py (issue 22): put this folder first on PYTHONPATH and set
``ORCH_BENCH_TRACEMALLOC=/path/prefix``; the process then traces its Python allocations from its first
import, and on SIGUSR2 writes ``<prefix>.<pid>.txt``: live allocations grouped by package (the folder
under site-packages or the standard library, or our top-level package), largest first, and its modules
counted by package, and the
collector's objects counted by type (``.types``). Not product code: nothing here is imported unless the bench puts it on the path."""

import os

PREFIX = os.environ.get("ORCH_BENCH_TRACEMALLOC")

if PREFIX:
    import signal
    import sys
    import tracemalloc

    tracemalloc.start(1)

    def _package(filename: str) -> str:
        for marker in ("site-packages/", "dist-packages/"):
            if marker in filename:
                return filename.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
        if "/lib/python3" in filename:
            return "stdlib:" + filename.split("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
        for ours in ("orchestrator", "workers", "pools", "job_templates"):
            if f"/{ours}/" in filename:
                return ours
        return filename if filename.startswith("<") else "other:" + filename.rsplit("/", 1)[-1]

    _previous: list[tracemalloc.Snapshot] = []

    def _dump(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        if _previous:  # what was allocated since the previous signal, and lives on, by line
            with open(f"{PREFIX}.{os.getpid()}.since", "w") as out:
                for stat in snapshot.compare_to(_previous[-1], "lineno")[:60]:
                    out.write(f"{stat}\n")
        _previous[:] = [snapshot]
        sizes: dict[str, int] = {}
        for stat in snapshot.statistics("filename"):
            name = _package(stat.traceback[0].filename)
            sizes[name] = sizes.get(name, 0) + stat.size
        modules: dict[str, int] = {}
        code: dict[str, int] = {}  # bytes of the modules' compiled code (.pyc), what the import loaded
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            key = _package(file) if file else "builtin"
            modules[key] = modules.get(key, 0) + 1
            cached = getattr(module, "__cached__", None)
            if cached and os.path.exists(cached):
                code[key] = code.get(key, 0) + os.path.getsize(cached)
        total = sum(sizes.values())
        with open(f"{PREFIX}.{os.getpid()}.txt", "w") as out:
            out.write(f"argv {' '.join(sys.argv)[:120]}\ntraced {total / 2**20:.2f} MB, {len(sys.modules)} modules\n")
            for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:40]:
                out.write(f"{size / 2**20:8.2f} MB  {modules.get(name, 0):4d} modules  {name}\n")
            out.write(f"modules by package (top 30), with their compiled code (.pyc bytes; "
                      f"{sum(code.values()) / 2**20:.1f} MB in all):\n")
            for name, count in sorted(modules.items(), key=lambda kv: -code.get(kv[0], 0))[:30]:
                out.write(f"{count:6d}  {code.get(name, 0) / 2**20:6.2f} MB  {name}\n")
        import gc
        from collections import Counter

        gc.unfreeze()  # what a server froze at its start (gc.freeze) is counted too; it stays collectable after
        objects = gc.get_objects()
        kinds = Counter(type(o).__qualname__ for o in objects)  # what grows, by type (bench/memory_growth.py)
        with open(f"{PREFIX}.{os.getpid()}.types", "w") as out:
            out.write("".join(f"{count} {kind}\n" for kind, count in kinds.most_common()))
            for o in objects:  # the caches' fill: SQLAlchemy's LRU caches (compiled statements), functools'
                if type(o).__name__ == "LRUCache":
                    out.write(f"cache {len(o)} of {getattr(o, 'capacity', '?')} {type(o).__module__}.LRUCache\n")
                elif type(o).__name__ == "_lru_cache_wrapper":
                    out.write(f"cache {o.cache_info().currsize} of {o.cache_info().maxsize} "
                              f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', '?')}\n")
        with open(f"{PREFIX}.{os.getpid()}.modules", "w") as out:
            out.write("\n".join(sorted(sys.modules)) + "\n")

    signal.signal(signal.SIGUSR2, _dump)
