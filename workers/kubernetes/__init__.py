"""The Kubernetes worker (``worker.py``): a run is a Job (``job.py``), watched through its pod
(``status.py``), found again after a restart (``recover.py``)."""

from workers.kubernetes.job import RunJob
from workers.kubernetes.worker import KubernetesWorker

__all__ = ["KubernetesWorker", "RunJob"]
