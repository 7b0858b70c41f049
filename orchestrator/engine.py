"""``python -m orchestrator.engine``: the flow-run process's command.

Job templates, images and pools stored in users' databases name this module, so it stays here while
the process's code lives in ``orchestrator/runtime/``.
"""

if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--fork-server"]:  # the process worker's (workers/forkserver.py)
        from orchestrator.runtime.forkserver import run_as_fork_server

        run_as_fork_server()
    from orchestrator.runtime.engine import run_as_main

    run_as_main()
