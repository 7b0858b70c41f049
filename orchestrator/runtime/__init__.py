"""The flow-run process (``python -m orchestrator.engine``): pull steps, the entrypoint, parameters,
state reports, output capture and log shipping."""
