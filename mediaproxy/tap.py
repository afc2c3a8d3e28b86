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

    try:
        return MediaProxyService(options.loaded, reactor, log_stream=twistd_log_stream(options))
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
