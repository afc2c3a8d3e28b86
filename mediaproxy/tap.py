"""``twistd mediaproxy``: command-line options and the service maker."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

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


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from mediaproxy.service import MediaProxyService
    from mediaproxy.supervisor import SupervisorService, worker_service
    from mediaproxy.workers.cpus import this_process_cpus

    config = options.loaded
    if options["worker"] is not None:
        return worker_service(config, reactor)
    workers = this_process_cpus() if config.proxy.workers == "auto" else int(config.proxy.workers)
    try:
        if workers > 1:
            return SupervisorService(config, reactor, workers)
        return MediaProxyService(config, reactor)
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
