"""Job templates: a pool's ``base_job_template`` plus job variables -> the job a worker starts."""

# What every kind of infrastructure shares: the flow-run process's command when the job gives none,
# and the labels each run's container / Job carries (``recover`` selects on the pool and worker ones).
DEFAULT_COMMAND = ["python", "-m", "orchestrator.engine"]
LABEL_RUN = "orchestrator.flow-run-id"
LABEL_POOL = "orchestrator.work-pool"
LABEL_WORKER = "orchestrator.worker"
