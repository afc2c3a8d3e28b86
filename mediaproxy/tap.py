"""``twistd mediaproxy``: command-line options and the service maker."""

from __future__ import annotations

import sys
from typing import IO

from twisted.application.service import IService
from twisted.python import usage
from twisted.python.logfile import LogFile

from mediaproxy.config import Config, ConfigError, load_config


class Options(usage.Options):
    optParameters = [
        ["config", "c", "etc/mediaproxy.ini", "The ini configuration file."],
        ["worker", None, None, "Internal: run as worker N of a supervisor ([proxy] workers > 1)."],
    ]

    def postOptions(self) -> None:
        # Validate here so that a bad config stops twistd with a usage error (exit status 1)
        # naming the file, section and key, before anything listens.
        try:
            self.loaded: Config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def twistd_log_stream(options: usage.Options) -> IO[str] | None:
    """Where twistd would write its log, chosen the way twistd's own Unix logger chooses: stdout
    with ``--logfile=-`` or ``--nodaemon`` and no log file, else ``--logfile`` (default
    ``twistd.log``), rotated as twistd rotates it. ``None`` outside twistd (no parent options)
    and with ``--syslog`` (twistd's syslog observer is kept)."""
    twistd = getattr(options, "parent", None)
    if twistd is None or twistd.get("syslog"):
        return None
    logfile = twistd.get("logfile") or ""
    if logfile == "-" or (not logfile and twistd.get("nodaemon")):
        # Taken now: once twistd starts logging, sys.stdout is redirected into the log.
        return sys.stdout
    stream: IO[str] = LogFile.fromFullPath(logfile or "twistd.log")
    return stream


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from mediaproxy.service import MediaProxyService
    from mediaproxy.supervisor import SupervisorService, worker_service
    from mediaproxy.workers.cpus import this_process_cpus

    config = options.loaded
    log_stream = twistd_log_stream(options)
    if options["worker"] is not None:
        return worker_service(config, reactor, log_stream)
    workers = this_process_cpus() if config.proxy.workers == "auto" else int(config.proxy.workers)
    try:
        if workers > 1:
            return SupervisorService(config, reactor, workers, log_stream=log_stream)
        return MediaProxyService(config, reactor, log_stream=log_stream)
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
