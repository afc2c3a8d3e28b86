"""The dashboard and the alerts speak the proxy's metrics: ``promtool check rules`` passes
deploy/prometheus/alerts.yml, ``promtool test rules`` passes alerts_test.yml, which shows every
alert firing on one series and silent on another; every metric name that the rules, the
dashboard's queries and its variables use is one a :class:`~mediaproxy.metrics.Metrics` (or,
with workers, :class:`~mediaproxy.metrics.SupervisorMetrics`) registry exports (under its
exposition name: ``_total``, ``_bucket`` ...), every label they group by is one docs/metrics.md
gives that metric, and every dashboard query is valid PromQL (checked by promtool, as recording
rules). The dashboard covers what an operator needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import yaml
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mediaproxy.metrics import Metrics, SupervisorMetrics
from tests.test_config import ROOT

RULES = ROOT.descendant(["deploy", "prometheus", "alerts.yml"])
RULES_TEST = ROOT.descendant(["deploy", "prometheus", "alerts_test.yml"])
DASHBOARD = ROOT.descendant(["deploy", "grafana", "mediaproxy.json"])
METRIC_PREFIXES = ("mediaproxy_", "process_")
# Labels Prometheus adds to every scraped series (job, instance; pod and namespace from
# Kubernetes discovery), le of histogram buckets, and worker (each worker process's own series).
TARGET_LABELS = {"job", "instance", "pod", "namespace", "le", "worker"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported_names() -> dict[str, str]:
    """Every series name a proxy exposes (a Metrics registry, and a SupervisorMetrics one with
    ``[proxy] workers`` > 1), mapped to its family's name."""
    names: dict[str, str] = {}
    families = [*Metrics().registry.collect(), *SupervisorMetrics().registry.collect()]
    for family in families:
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def documented_labels() -> dict[str, set[str]]:
    """Each family's labels, as docs/metrics.md lists them (family name without ``_total``)."""
    text = ROOT.descendant(["docs", "metrics.md"]).getContent().decode()
    labels: dict[str, set[str]] = {}
    for name, cell in re.findall(r"^\| `((?:mediaproxy|process)_\w+)` \| \w+ \|([^|]*)\|", text, re.M):
        labels[name.removesuffix("_total")] = set(re.findall(r"`(\w+)`", cell))
    return labels


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression uses (identifiers with a metric prefix)."""
    return {token for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if token.startswith(METRIC_PREFIXES)}


def grouping_labels(expr: str) -> set[str]:
    """The labels of every ``by (...)`` clause."""
    return {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.getContent())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.getContent())
    return loaded


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def as_prometheus_query(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by what Prometheus itself accepts."""
    return expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$platform", ".*")


def promtool(case: SynchronousTestCase) -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            case.fail("CI is set but promtool is not installed (scripts/setup-env.sh installs Debian's prometheus)")
        raise SkipTest("promtool is not installed (apt-get install prometheus; CI installs it)")
    return found


class PromtoolTests(SynchronousTestCase):
    def run_promtool(self, *args: str, cwd: FilePath[str] | None = None) -> None:
        result = subprocess.run([promtool(self), *args], capture_output=True, text=True, timeout=120,
                                cwd=(cwd or RULES.parent()).path)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_check_rules(self) -> None:
        self.run_promtool("check", "rules", RULES.basename())

    def test_the_unit_tests_of_the_rules_pass(self) -> None:
        self.run_promtool("test", "rules", RULES_TEST.basename())

    def test_every_alert_is_shown_firing_and_silent(self) -> None:
        tests = yaml.safe_load(RULES_TEST.getContent())["tests"]
        cases = [case for test in tests for case in test["alert_rule_test"]]
        for rule in alert_rules():
            own = [case for case in cases if case["alertname"] == rule["alert"]]
            self.assertTrue([case for case in own if case["exp_alerts"]], f"{rule['alert']} never fires")
            self.assertTrue([case for case in own if not case["exp_alerts"]], f"{rule['alert']} is never silent")

    def test_a_broken_expectation_fails(self) -> None:
        broken = FilePath(self.mktemp())
        broken.makedirs()
        RULES.copyTo(broken.child(RULES.basename()))
        text = RULES_TEST.getContent().decode().replace("reason: overflow\n", "reason: bargein\n", 1)
        broken.child(RULES_TEST.basename()).setContent(text.encode())
        result = subprocess.run([promtool(self), "test", "rules", RULES_TEST.basename()], capture_output=True,
                                text=True, timeout=120, cwd=broken.path)
        self.assertNotEqual(result.returncode, 0)

    def test_every_dashboard_query_is_valid_promql(self) -> None:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query{n}", "expr": as_prometheus_query(expr)}
            for n, expr in enumerate(dashboard_queries())]}]}
        folder = FilePath(self.mktemp())
        folder.makedirs()
        folder.child("dashboard.yml").setContent(yaml.safe_dump(rules).encode())
        self.run_promtool("check", "rules", "dashboard.yml", cwd=folder)


class MetricNameTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.exported = exported_names()
        self.labels = documented_labels()

    def assertSpeaksTheProxysMetrics(self, where: str, expr: str) -> None:
        used = metric_names(expr)
        self.assertTrue(used, f"{where}: no metric in {expr!r}")
        unknown = used - set(self.exported)
        self.assertEqual(unknown, set(), f"{where}: {expr!r} uses metrics the proxy does not export")
        allowed = set(TARGET_LABELS)
        for name in used:
            allowed |= self.labels[self.exported[name]]
        self.assertEqual(grouping_labels(expr) - allowed, set(), f"{where}: {expr!r} groups by unknown labels")

    def test_the_exported_names_come_from_the_registry(self) -> None:
        self.assertIn("mediaproxy_calls_total", self.exported)
        self.assertIn("mediaproxy_playout_late_seconds_bucket", self.exported)
        self.assertIn("process_cpu_seconds_total", self.exported)
        self.assertNotIn("mediaproxy_calls_started_total", self.exported)
        self.assertEqual(set(self.labels), set(self.exported.values()))

    def test_the_checker_sees_a_wrong_name_and_a_wrong_label(self) -> None:
        with self.assertRaises(self.failureException):
            self.assertSpeaksTheProxysMetrics("x", "rate(mediaproxy_calls_ended_total[5m])")
        with self.assertRaises(self.failureException):
            self.assertSpeaksTheProxysMetrics("x", "sum by (backend) (rate(mediaproxy_frames_total[5m]))")
        self.assertSpeaksTheProxysMetrics("x", "sum by (platform, direction) (rate(mediaproxy_frames_total[5m]))")

    def test_alert_rules(self) -> None:
        for rule in alert_rules():
            self.assertSpeaksTheProxysMetrics(rule["alert"], rule["expr"])
            self.assertIn(rule["labels"]["severity"], ("warning", "critical"))
            self.assertEqual(set(rule["annotations"]), {"summary", "description"})

    def test_dashboard_queries_and_variables(self) -> None:
        for expr in dashboard_queries():
            self.assertSpeaksTheProxysMetrics("dashboard", expr)
        for variable in dashboard()["templating"]["list"]:
            if variable["type"] == "query":
                self.assertSpeaksTheProxysMetrics(variable["name"], variable["definition"])


class DashboardTests(SynchronousTestCase):
    def test_panels_are_well_formed(self) -> None:
        board = dashboard()
        self.assertEqual((board["uid"], board["title"]), ("mediaproxy", "mediaproxy"))
        ids = [panel["id"] for panel in board["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        names = [variable["name"] for variable in board["templating"]["list"]]
        self.assertEqual(names, ["datasource", "job", "platform"])
        for panel in board["panels"]:
            self.assertLessEqual(panel["gridPos"]["x"] + panel["gridPos"]["w"], 24, panel["title"])
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"], {"type": "prometheus", "uid": "${datasource}"}, panel["title"])
            self.assertTrue(panel["description"], panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            refs = [target["refId"] for target in panel["targets"]]
            self.assertEqual(len(refs), len(set(refs)), panel["title"])

    def test_it_shows_what_an_operator_needs(self) -> None:
        queries = dashboard_queries()

        def shown(pattern: str) -> bool:
            return any(re.search(pattern, query) for query in queries)

        needed = {
            "calls active": r"mediaproxy_calls_active\{",
            "calls ended by outcome": r"by \(outcome\) \(rate\(mediaproxy_calls_total",
            "calls started": r"rate\(mediaproxy_calls_total.*\+ sum\(deriv\(mediaproxy_calls_active",
            "frames in and out": r"by \(direction\) \(rate\(mediaproxy_frames_total",
            "frames dropped": r"mediaproxy_frames_dropped_total",
            "lateness p50": r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(mediaproxy_playout_late_seconds_bucket",
            "lateness p99": r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(mediaproxy_playout_late_seconds_bucket",
            "underruns": r"mediaproxy_playout_underruns_total",
            "barge-in reaction": r"histogram_quantile\(0\.99, .*mediaproxy_bargein_seconds_bucket",
            "buffer depth": r"histogram_quantile\(0\.99, .*mediaproxy_playout_buffer_seconds_bucket",
            "backend reconnects": r"mediaproxy_backend_reconnects_total",
            "backend errors": r"by \(backend, code\) \(rate\(mediaproxy_backend_errors_total",
            "protocol errors": r"by \(platform, kind\) \(rate\(mediaproxy_protocol_errors_total",
            "calls refused": r"mediaproxy_calls_refused_total",
            "CPU per worker": r"by \(instance, worker\) \(rate\(process_cpu_seconds_total",
            "worker restarts": r"mediaproxy_worker_restarts_total",
        }
        self.assertEqual([name for name, pattern in needed.items() if not shown(pattern)], [])
