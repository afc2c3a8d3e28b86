"""``twistd mediaproxy``: command-line options and the service maker."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

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


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from mediaproxy.service import MediaProxyService

    try:
        return MediaProxyService(options.loaded, reactor)
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
