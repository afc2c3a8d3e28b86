"""The parts of ``[proxy] workers`` that need no process: how many workers ``auto`` means (fake
cgroup trees), the merged scrape (byte-exact), the restart policy (a Clock and fake processes),
the shared listener's endpoint parsing, and the config contract."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import ConfigError, parse_config
from mediaproxy.metrics import SupervisorMetrics
from mediaproxy.workers.cpus import quota_cpus, usable_cpus
from mediaproxy.workers.merge import merge_worker_metrics, with_worker_label
from mediaproxy.workers.sockets import bind, listen_spec
from mediaproxy.workers.supervision import Backoff, WorkerPool
from tests.test_tls import self_signed


class UsableCpusTests(SynchronousTestCase):
    def tree(self, files: dict[str, str]) -> str:
        root = FilePath(self.mktemp())
        root.makedirs()
        for name, text in files.items():
            path = root.preauthChild(name)
            path.parent().makedirs(ignoreExistingDirectory=True)
            path.setContent(text.encode())
        return root.path

    def test_cgroup_v2(self) -> None:
        cases = [("max 100000\n", 8, 8), ("200000 100000\n", 8, 2), ("150000 100000\n", 8, 2),
                 ("50000 100000\n", 8, 1), ("400000 100000\n", 2, 2), ("max 100000", 1, 1)]
        for text, affinity, expected in cases:
            self.assertEqual(usable_cpus(affinity, self.tree({"cpu.max": text})), expected, (text, affinity))

    def test_cgroup_v1(self) -> None:
        self.assertEqual(usable_cpus(8, self.tree({"cpu/cpu.cfs_quota_us": "300000\n",
                                                   "cpu/cpu.cfs_period_us": "100000\n"})), 3)
        self.assertEqual(usable_cpus(8, self.tree({"cpu/cpu.cfs_quota_us": "-1\n",
                                                   "cpu/cpu.cfs_period_us": "100000\n"})), 8)
        self.assertEqual(usable_cpus(8, self.tree({"cpu,cpuacct/cpu.cfs_quota_us": "250000",
                                                   "cpu,cpuacct/cpu.cfs_period_us": "100000"})), 3)
        self.assertEqual(usable_cpus(4, self.tree({"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "50000"})), 2)

    def test_no_or_unreadable_quota_leaves_the_affinity(self) -> None:
        self.assertIsNone(quota_cpus(self.tree({})))
        self.assertEqual(usable_cpus(6, self.tree({})), 6)
        self.assertEqual(usable_cpus(6, self.tree({"cpu.max": "garbage"})), 6)
        self.assertEqual(usable_cpus(6, self.tree({"cpu.max": "x 100000"})), 6)
        self.assertEqual(usable_cpus(6, self.tree({"cpu.max": "100000 0"})), 6)
        self.assertEqual(usable_cpus(6, os.path.join(self.mktemp(), "absent")), 6)

    def test_at_least_one(self) -> None:
        self.assertEqual(usable_cpus(0, self.tree({})), 1)
        self.assertEqual(usable_cpus(4, self.tree({"cpu.max": "1 100000"})), 1)


WORKER_0 = b"""\
# HELP mediaproxy_calls_active Calls in progress.
# TYPE mediaproxy_calls_active gauge
mediaproxy_calls_active{platform="twilio"} 2.0
# HELP mediaproxy_playout_underruns_total Underruns.
# TYPE mediaproxy_playout_underruns_total counter
mediaproxy_playout_underruns_total 3.0
mediaproxy_playout_underruns_created 1.7e+09
# HELP mediaproxy_bargein_seconds Barge-in.
# TYPE mediaproxy_bargein_seconds histogram
mediaproxy_bargein_seconds_bucket{le="0.001"} 1.0
mediaproxy_bargein_seconds_bucket{le="+Inf"} 1.0
mediaproxy_bargein_seconds_count 1.0
mediaproxy_bargein_seconds_sum 0.0004
"""

WORKER_2 = b"""\
# HELP mediaproxy_calls_active Calls in progress.
# TYPE mediaproxy_calls_active gauge
mediaproxy_calls_active{platform="twilio"} 5.0
mediaproxy_calls_active{platform="odd}name"} 1.0
# HELP mediaproxy_tool_seconds Tool time.
# TYPE mediaproxy_tool_seconds histogram
mediaproxy_tool_seconds_count{tool="lookup"} 4.0
"""

MERGED = b"""\
# HELP mediaproxy_calls_active Calls in progress.
# TYPE mediaproxy_calls_active gauge
mediaproxy_calls_active{worker="0",platform="twilio"} 2.0
mediaproxy_calls_active{worker="2",platform="twilio"} 5.0
mediaproxy_calls_active{worker="2",platform="odd}name"} 1.0
# HELP mediaproxy_playout_underruns_total Underruns.
# TYPE mediaproxy_playout_underruns_total counter
mediaproxy_playout_underruns_total{worker="0"} 3.0
mediaproxy_playout_underruns_created{worker="0"} 1.7e+09
# HELP mediaproxy_bargein_seconds Barge-in.
# TYPE mediaproxy_bargein_seconds histogram
mediaproxy_bargein_seconds_bucket{worker="0",le="0.001"} 1.0
mediaproxy_bargein_seconds_bucket{worker="0",le="+Inf"} 1.0
mediaproxy_bargein_seconds_count{worker="0"} 1.0
mediaproxy_bargein_seconds_sum{worker="0"} 0.0004
# HELP mediaproxy_tool_seconds Tool time.
# TYPE mediaproxy_tool_seconds histogram
mediaproxy_tool_seconds_count{worker="2",tool="lookup"} 4.0
"""


class MergeTests(SynchronousTestCase):
    def test_families_once_samples_of_each_worker_labelled_in_order(self) -> None:
        # Worker 1 did not answer: its series are missing, the others are whole.
        self.assertEqual(merge_worker_metrics([WORKER_0, None, WORKER_2]), MERGED)

    def test_one_line(self) -> None:
        self.assertEqual(with_worker_label(b"a 1.0", 3), b'a{worker="3"} 1.0')
        self.assertEqual(with_worker_label(b'a{b="c"} 1.0 123', 0), b'a{worker="0",b="c"} 1.0 123')
        self.assertEqual(with_worker_label(b"a{} 1.0", 1), b'a{worker="1"} 1.0')

    def test_nothing_answered(self) -> None:
        self.assertEqual(merge_worker_metrics([None, None]), b"")

    def test_real_registries_merge_into_text_prometheus_parses(self) -> None:
        from prometheus_client import generate_latest
        from prometheus_client.parser import text_string_to_metric_families

        from mediaproxy.metrics import Metrics

        workers = [Metrics(), Metrics()]
        workers[0].calls_total.labels("twilio", "completed").inc(2)
        workers[1].calls_total.labels("twilio", "completed").inc(5)
        merged = merge_worker_metrics([generate_latest(m.registry) for m in workers]).decode()
        calls = {s.labels["worker"]: s.value for family in text_string_to_metric_families(merged)
                 for s in family.samples if s.name == "mediaproxy_calls_total"}
        self.assertEqual(calls, {"0": 2.0, "1": 5.0})


class FakeProcess:
    def __init__(self, index: int, ended: Any) -> None:
        self.index = index
        self.ended = ended
        self.signals: list[str] = []

    def signal(self, name: str) -> None:
        self.signals.append(name)


class SupervisionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.metrics = SupervisorMetrics()
        self.spawned: list[FakeProcess] = []
        self.refuse = False

    def spawn(self, index: int, ended: Any) -> FakeProcess:
        if self.refuse:
            raise OSError("fork refused")
        process = FakeProcess(index, ended)
        self.spawned.append(process)
        return process

    def pool(self, count: int = 2) -> WorkerPool:
        pool = WorkerPool(count, self.spawn, self.clock, self.metrics, Backoff(first_s=0.5, max_s=4, stable_s=10))
        pool.start()
        return pool

    def sample(self, name: str, **labels: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(name, labels)
        return value

    def latest(self, index: int) -> FakeProcess:
        return [p for p in self.spawned if p.index == index][-1]

    def test_a_dead_worker_restarts_after_a_doubling_bounded_backoff(self) -> None:
        pool = self.pool()
        self.assertEqual([p.index for p in self.spawned], [0, 1])
        self.assertEqual(self.sample("mediaproxy_workers_up"), 2)
        waits = []
        for _ in range(6):  # a crash loop: each new worker dies at once
            self.latest(1).ended("signal 9")
            self.assertEqual(pool.up(), 1)
            self.assertEqual(self.sample("mediaproxy_workers_up"), 1)
            count = len(self.spawned)
            waited = 0.0
            while len(self.spawned) == count:
                self.clock.advance(0.25)
                waited += 0.25
            waits.append(waited)
        self.assertEqual(waits, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        self.assertEqual(self.sample("mediaproxy_worker_restarts_total", worker="1"), 6)
        self.assertEqual(self.sample("mediaproxy_worker_restarts_total", worker="0"), 0)
        self.assertEqual(self.sample("mediaproxy_workers_up"), 2)
        # A worker that ran a while dies: the backoff starts again from its first step.
        self.clock.advance(10)
        self.latest(1).ended("exit status 1")
        self.clock.advance(0.5)
        self.assertEqual(len(self.spawned), 9)

    def test_a_worker_that_cannot_be_spawned_is_retried(self) -> None:
        self.refuse = True
        pool = self.pool(1)
        self.assertEqual((pool.up(), self.spawned), (0, []))
        self.refuse = False
        self.clock.advance(0.5)
        self.assertEqual(pool.up(), 1)
        self.assertEqual(self.sample("mediaproxy_worker_restarts_total", worker="0"), 1)

    def test_stop_drains_every_worker_and_restarts_none(self) -> None:
        pool = self.pool(3)
        self.latest(2).ended("signal 9")  # its restart is pending when the stop comes
        stopped = pool.stop(grace_s=32)
        self.assertEqual([p.signals for p in self.spawned], [["TERM"], ["TERM"], []])
        self.spawned[0].ended("signal 15")
        self.clock.advance(30)
        self.assertNoResult(stopped)
        self.spawned[1].ended("signal 15")
        self.successResultOf(stopped)
        self.assertEqual(len(self.spawned), 3, "nothing restarted during the drain")
        self.assertEqual(self.sample("mediaproxy_worker_restarts_total", worker="2"), 0)
        self.clock.advance(100)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_worker_that_outlives_the_drain_is_killed(self) -> None:
        pool = self.pool(2)
        stopped = pool.stop(grace_s=32)
        self.spawned[0].ended("signal 15")
        self.clock.advance(31.9)
        self.assertEqual(self.spawned[1].signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(self.spawned[1].signals, ["TERM", "KILL"])
        self.assertNoResult(stopped)
        self.spawned[1].ended("signal 9")
        self.successResultOf(stopped)
        self.assertEqual(self.sample("mediaproxy_workers_up"), 0)


class ListenSpecTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        spec = listen_spec("tcp:8080:interface=127.0.0.1:backlog=77")
        self.assertEqual((spec.port, spec.interface, spec.backlog, spec.tls), (8080, "127.0.0.1", 77, None))
        self.assertEqual(spec.family, socket.AF_INET)
        self.assertEqual(listen_spec("tcp:9000").interface, "")
        self.assertEqual(listen_spec("tcp6:9000:interface=\\:\\:1").family, socket.AF_INET6)

    def test_ssl_carries_its_tls_context_and_wraps_the_site(self) -> None:
        key, cert, _ = self_signed(os.path.abspath(self.mktemp()))
        spec = listen_spec(f"ssl:8443:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        self.assertEqual((spec.port, spec.interface), (8443, "127.0.0.1"))
        self.assertIsNotNone(spec.tls)
        from twisted.internet.protocol import Factory

        self.assertIsInstance(spec.wrap(Factory()), TLSMemoryBIOFactory)

    def test_other_kinds_are_refused(self) -> None:
        self.assertRaises(ValueError, listen_spec, "unix:/tmp/mediaproxy.sock")

    def test_bind_listens_on_a_free_port(self) -> None:
        sock = bind(listen_spec("tcp:0:interface=127.0.0.1"))
        self.addCleanup(sock.close)
        host, port = sock.getsockname()
        self.assertEqual(host, "127.0.0.1")
        self.assertGreater(port, 0)
        self.assertFalse(sock.get_inheritable(), "only the explicit child mapping passes it on")


def sections(**proxy: str) -> dict[str, dict[str, str]]:
    return {"proxy": {"listen": "tcp:0:interface=127.0.0.1", **proxy},
            "platform:twilio": {"path": "/twilio", "backend": "echo"}, "backend:echo": {"type": "echo"}}


class WorkersConfigTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertEqual(parse_config("t.ini", sections(), {}).proxy.workers, 1)
        self.assertEqual(parse_config("t.ini", sections(workers="4"), {}).proxy.workers, 4)
        self.assertEqual(parse_config("t.ini", sections(workers="auto"), {}).proxy.workers, "auto")

    def test_bad_values_name_the_key(self) -> None:
        for value in ("0", "-1", "two", ""):
            error = self.assertRaises(ConfigError, parse_config, "t.ini", sections(workers=value), {})
            self.assertEqual((error.section, error.key), ("proxy", "workers"), value)
            self.assertIn("auto", str(error))

    def test_a_unix_listener_cannot_be_shared(self) -> None:
        cfg = sections(listen="unix:/tmp/mp.sock", workers="2")
        error = self.assertRaises(ConfigError, parse_config, "t.ini", cfg, {})
        self.assertEqual(str(error), "t.ini: [proxy] workers: several workers share a tcp: or ssl: listener; "
                                     "[proxy] listen = unix:/tmp/mp.sock is neither: set workers = 1")
        parse_config("t.ini", sections(listen="unix:/tmp/mp.sock"), {})

    def test_the_plugin_makes_a_supervisor_only_for_several_workers(self) -> None:
        from twisted.internet import reactor

        from mediaproxy.service import MediaProxyService
        from mediaproxy.supervisor import SupervisorService
        from mediaproxy.tap import Options, makeService

        for workers, kind in (("1", MediaProxyService), ("3", SupervisorService)):
            path = self.mktemp()
            text = "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                           for name, keys in sections(workers=workers).items())
            FilePath(path).setContent(text.encode())
            options = Options()
            options.parseOptions(["--config", path])
            service = makeService(options)
            self.assertIsInstance(service, kind)
            if isinstance(service, SupervisorService):
                self.assertEqual(len(service.pool.slots), 3)
        del reactor
