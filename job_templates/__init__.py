"""Job templates: a pool's ``base_job_template`` plus job variables -> the job a worker starts."""
