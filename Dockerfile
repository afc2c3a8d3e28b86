# mediaproxy in a container: docker build -t mediaproxy . (README.md "Deploy", docs/deploy.md).
#
# Two stages: the builder makes the wheel of this checkout and the wheels of its dependencies
# (so the runtime stage needs no compiler and no network); the runtime stage installs them into
# a slim Python 3.11 image that runs as an unprivileged user. The configuration is an ini file
# at /etc/mediaproxy/mediaproxy.ini (deploy/mediaproxy.ini by default; mount your own over it)
# whose secrets are ${ENV} references, given to the container as environment variables.

FROM python:3.11-slim-bookworm AS builder
WORKDIR /src
# Only what the wheel is built from: the package, the twistd plugin and the metadata.
COPY pyproject.toml README.md ./
COPY mediaproxy ./mediaproxy
COPY twisted/plugins/mediaproxy_plugin.py ./twisted/plugins/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# libopus0: opuslib loads libopus.so.0 at run time (Opus on the generic WebSocket platform).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0=1.3.1-3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /wheels /wheels
# --no-index: exactly the wheels built above, nothing fetched at this stage.
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/mediaproxy-*.whl \
    && rm -rf /wheels \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
# The last line writes Twisted's plugin cache now, as root: at run time site-packages is not
# writable, and every start would log that the cache could not be saved.
COPY deploy/mediaproxy.ini /etc/mediaproxy/mediaproxy.ini
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin mediaproxy
USER 10001
WORKDIR /tmp
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# 8080: the platform WebSockets; 9090: /metrics, /health and /ready (deploy/mediaproxy.ini
# listens on 0.0.0.0 there on purpose, for Prometheus and the probes).
EXPOSE 8080 9090
# No curl in the slim image: Python's urllib fails (non-zero exit) on a refused connection or
# any status but 2xx.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=2)"]
# SIGTERM starts the drain: /ready turns 503, new calls are refused, live calls get
# [proxy] drain_seconds before they are ended; allow that much time before a SIGKILL
# (docker stop --time, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# -n: the foreground, logging to stdout; --pidfile=: no pid file (one process per container).
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "mediaproxy"]
CMD ["--config", "/etc/mediaproxy/mediaproxy.ini"]
