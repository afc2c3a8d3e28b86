"""The proxy's Prometheus metrics, in a registry the service owns (never the global one).

Names and labels are a contract (docs/metrics.md); dashboards rely on them. No label ever carries a
per-call value: the label sets here are bounded by configuration (platform and backend names) and
by fixed vocabularies (direction, reason, kind, outcome).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

_FINE_SECONDS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_BUFFER_SECONDS = (0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_CONNECT_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric the proxy exports, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "mediaproxy_"
        self.calls_active = Gauge(p + "calls_active", "Calls in progress.", ["platform"], registry=r)
        self.calls_total = Counter(
            p + "calls_total", "Calls ended, by outcome.", ["platform", "outcome"], registry=r
        )
        self.calls_refused_total = Counter(
            p + "calls_refused_total",
            "New calls refused (reason: capacity = [proxy] max_calls reached, draining = shutting down).",
            ["platform", "reason"],
            registry=r,
        )
        self.draining = Gauge(p + "draining", "1 while the process drains on shutdown (new calls refused), else 0.",
                              registry=r)
        self.frames_total = Counter(
            p + "frames_total",
            "Audio messages exchanged with platforms (direction: in = from caller, out = to caller).",
            ["platform", "direction"],
            registry=r,
        )
        self.frames_dropped_total = Counter(
            p + "frames_dropped_total",
            "Audio dropped on purpose, in frames of 20 ms (direction: in/out).",
            ["direction", "reason"],
            registry=r,
        )
        self.playout_late_seconds = Histogram(
            p + "playout_late_seconds",
            "Outbound packet send time minus its scheduled time.",
            buckets=_FINE_SECONDS,
            registry=r,
        )
        self.playout_underruns_total = Counter(
            p + "playout_underruns_total",
            "Times the platform ran out of bot audio in the middle of a response.",
            registry=r,
        )
        self.playout_buffer_seconds = Histogram(
            p + "playout_buffer_seconds",
            "Bot audio queued in the playout when more arrives.",
            buckets=_BUFFER_SECONDS,
            registry=r,
        )
        self.bargein_seconds = Histogram(
            p + "bargein_seconds",
            "Barge-in signal received to platform flush sent.",
            buckets=_FINE_SECONDS,
            registry=r,
        )
        self.backend_connect_seconds = Histogram(
            p + "backend_connect_seconds",
            "Time to a ready backend session.",
            ["backend"],
            buckets=_CONNECT_SECONDS,
            registry=r,
        )
        self.backend_reconnects_total = Counter(
            p + "backend_reconnects_total", "Backend reconnect attempts.", ["backend"], registry=r
        )
        self.backend_errors_total = Counter(
            p + "backend_errors_total",
            "Errors reported by backends, by code.",
            ["backend", "code"],
            registry=r,
        )
        self.backend_tokens_total = Counter(
            p + "backend_tokens_total",
            "Tokens used by backend responses (kind: input_audio, input_text, output_audio, ...).",
            ["backend", "kind"],
            registry=r,
        )
        # The backend label everywhere is the [backend:NAME] section (bounded by configuration);
        # its type and flavor are carried once here, so dashboards join on backend instead of
        # every backend series growing two more labels.
        self.backend_info = Gauge(
            p + "backend_info",
            "A configured backend, with its type and flavor (always 1).",
            ["backend", "type", "flavor"],
            registry=r,
        )
        self.backend_rate_limit_remaining = Gauge(
            p + "backend_rate_limit_remaining",
            "Last reported remaining backend rate limit.",
            ["backend", "name"],
            registry=r,
        )
        self.flow_pauses_total = Counter(
            p + "flow_pauses_total",
            "Flow-control pauses (leg: platform = the platform paused the caller stream, or a WebSocket "
            "client paused our sending; backends are "
            "never paused).",
            ["leg"],
            registry=r,
        )
        self.protocol_errors_total = Counter(
            p + "protocol_errors_total",
            "Malformed or disallowed input from a peer.",
            ["platform", "kind"],
            registry=r,
        )
        self.platform_errors_total = Counter(
            p + "platform_errors_total",
            "Error messages a platform reported to us (e.g. AudioHook error codes).",
            ["platform", "code"],
            registry=r,
        )
        self.clock_tick_late_seconds = Histogram(
            p + "clock_tick_late_seconds",
            "How late the shared playout clock's ticks ran (reactor stalls show here).",
            buckets=_FINE_SECONDS,
            registry=r,
        )
        self.gc_pause_seconds = Histogram(
            p + "gc_pause_seconds",
            "Garbage-collection pauses of the proxy process.",
            ["generation"],
            buckets=_FINE_SECONDS,
            registry=r,
        )
        self.call_resumes_total = Counter(
            p + "call_resumes_total",
            "Platform reconnects of a live call (outcome: resumed, expired).",
            ["platform", "outcome"],
            registry=r,
        )
        self.call_actions_total = Counter(
            p + "call_actions_total",
            "Call actions and tools the model used (action: end_call, transfer_call, send_dtmf or a "
            "configured [tool:NAME]; outcome: ok, refused, failed, timeout, fallback, cancelled).",
            ["action", "platform", "outcome"],
            registry=r,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, ...: the CPU a dashboard
        # compares with the calls each process carries (read from /proc at each scrape).
        self.process = ProcessCollector(registry=r)
        self.tool_seconds = Histogram(
            p + "tool_seconds",
            "Time a [tool:NAME] endpoint took to answer (or to fail).",
            ["tool"],
            buckets=_CONNECT_SECONDS,
            registry=r,
        )


class SupervisorMetrics:
    """The supervisor's own metrics (``[proxy] workers`` > 1), served beside its workers' merged
    series. ``worker`` is a worker's index, 0 to workers - 1."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "mediaproxy_"
        self.worker_restarts_total = Counter(
            p + "worker_restarts_total", "Worker processes restarted after they died.", ["worker"], registry=r
        )
        self.workers_up = Gauge(p + "workers_up", "Worker processes running.", registry=r)
        self.worker_scrape_failures_total = Counter(
            p + "worker_scrape_failures_total",
            "Scrapes of /metrics that got no answer from a worker in time (its series are missing "
            "from that scrape).",
            ["worker"],
            registry=r,
        )
