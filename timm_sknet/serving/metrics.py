"""Prometheus metrics of the service (``prometheus_client``), per app, scraped at ``GET /metrics``.

With several processes (``timm-sknet serve --workers N``, gunicorn), prometheus_client's multiprocess mode adds
them up: where ``PROMETHEUS_MULTIPROC_DIR`` names a folder when the processes start, each writes its values there
and every scrape, whichever process answers it, reports the sum over all of them. ``timm-sknet serve --workers N``
makes such a folder itself when none is given.
"""
import os
from typing import Tuple

__all__ = ['Metrics']

#: the request latency buckets (s): a small model's answer in milliseconds to a queue's wait of seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: the batch size buckets (images per model call)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The service's counters, histograms and gauge, in a registry of their own (one app, one set)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter('timm_sknet_requests', 'HTTP requests answered, by route and status',
                                ['route', 'status'], registry=self.registry)
        self.latency = Histogram('timm_sknet_request_seconds', 'time from request to answer, by route', ['route'],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model = Histogram('timm_sknet_model_seconds', 'time of one model call (one image, or one batch)',
                               buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch = Histogram('timm_sknet_batch_size', 'images per model call', buckets=BATCH_BUCKETS,
                               registry=self.registry)
        self.queue = Gauge('timm_sknet_queue_depth', 'requests admitted that do not hold a model slot yet '
                           '(reading, decoding or waiting)', registry=self.registry, multiprocess_mode='livesum')
        self.rejected = Counter('timm_sknet_rejected', 'requests refused with 503, by reason', ['reason'],
                                registry=self.registry)

    def exposition(self) -> Tuple[bytes, str]:
        """The text a scrape gets, and its content type: every process's sum in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
        if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
