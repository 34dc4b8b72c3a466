"""Prometheus metrics of the service, on a registry of its own (so tests can run several services)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "MODEL_STATES", "ServiceMetrics"]

MODEL_STATES = ["loading", "ready", "failed", "stalled", "stopping"]

# Buckets sized for a TPU (~30 ms/token on an SE7) and for the cmodel/host engines (up to seconds).
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """The service's counters, gauges and histograms. Safe to update from the engine thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llm_tpu_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.generations = Counter(
            "llm_tpu_generations", "finished generations by done_reason", ["done_reason"], registry=r
        )
        self.queue_depth = Gauge("llm_tpu_queue_depth", "requests waiting for the engine", registry=r)
        self.running = Gauge("llm_tpu_running", "generations running (0 or 1)", registry=r)
        self.rejected = Counter(
            "llm_tpu_rejected", "requests rejected because the queue was full", registry=r
        )
        self.tokens_in = Counter(
            "llm_tpu_prompt_tokens", "prompt tokens prefilled (after prefix reuse)", registry=r
        )
        self.tokens_reused = Counter(
            "llm_tpu_reused_prompt_tokens", "prompt tokens served from the KV cache", registry=r
        )
        self.tokens_out = Counter("llm_tpu_generated_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(
            "llm_tpu_time_to_first_token_seconds",
            "time from accepting a request to its first text",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.token_latency = Histogram(
            "llm_tpu_token_latency_seconds",
            "time between consecutive streamed text chunks",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.model_state = Enum("llm_tpu_model_state", "model load state", states=MODEL_STATES, registry=r)
        self.model_state.state("loading")
        self.load_seconds = Gauge("llm_tpu_model_load_seconds", "time the model took to load", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
