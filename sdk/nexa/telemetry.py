"""Names and buckets of the job metrics that both the operator (cluster mode) and the
gateway (standalone mode) export, so one Grafana dashboard reads either."""

from __future__ import annotations

JOB_DURATION_METRIC = "nexa_job_duration_seconds"
JOB_GPU_SECONDS_METRIC = "nexa_job_gpu_seconds_total"

# From seconds (an audit of a small dataset) to a day (a long training run).
JOB_DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
