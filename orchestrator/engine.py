"""``python -m orchestrator.engine``: the flow-run process's command.

Job templates, images and pools stored in users' databases name this module, so it stays here while
the process's code lives in ``orchestrator/runtime/``.
"""

if __name__ == "__main__":
    from orchestrator.runtime.engine import run_as_main

    run_as_main()
