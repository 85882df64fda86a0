"""Where Dramatiq keeps FTL's messages in Redis: the key namespace and every queue an actor of
workers/ consumes (tests/integration/test_worker_metrics.py keeps the list in step with the
actors). Shared by the broker (workers/broker.py) and the queue gauges (workers/metrics.py), which
do not import each other."""

from __future__ import annotations

NAMESPACE = "ftl-dramatiq"
QUEUES = ("default", "email", "margin", "flush", "sportmonks")
