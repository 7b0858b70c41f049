"""What a flow's author imports: ``@flow``, ``@task``, ``deploy``, ``serve``, ``run_deployment``, and what
a flow or task sees while it runs (``running.py``)."""
