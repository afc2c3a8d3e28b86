"""The Kubernetes base (deploy/kubernetes/), validated offline: every file the kustomization
names exists and every manifest there is named; core kinds pass kubernetes-validate's strict
schemas of a pinned Kubernetes version; the ServiceMonitor passes the vendored schema; the
pieces agree with each other and with the image (labels and selectors, port names and the
ini's ports, probes on /ready and /health, the ini in the ConfigMap, every ${NAME} the ini
needs given from the Secret, a grace period longer than preStop plus drain_seconds, the HPA's
metric served by the adapter rule and exported by the proxy); yamllint passes every YAML file
under deploy/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import load_config
from mediaproxy.metrics import Metrics
from tests.test_config import ROOT
from tests.test_deploy_container import IMAGE_INI, SECRETS, image_config_path

KUBERNETES_VERSION = "1.31.0"
"""The Kubernetes version the manifests are validated against (kubernetes-validate's bundled schemas)."""

BASE = ROOT.child("deploy").child("kubernetes")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): BASE.child("schemas").child("servicemonitor-v1.schema.json"),
}
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"


def load(path: FilePath[str]) -> Any:
    return yaml.safe_load(path.getContent())


def resources() -> dict[str, dict[str, Any]]:
    """The kustomization's resources by kind (one of each here)."""
    found: dict[str, dict[str, Any]] = {}
    for name in load(BASE.child("kustomization.yaml"))["resources"]:
        doc = load(BASE.preauthChild(name))
        kind = doc["kind"] if doc["kind"] != "Service" else f"Service/{doc['metadata']['name']}"
        found[kind] = doc
    return found


def sleep_seconds(hook: dict[str, Any]) -> int:
    """What a preStop hook waits, s (exec sleep N, or the sleep action)."""
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


class KustomizationTests(SynchronousTestCase):
    def test_every_resource_exists_and_every_manifest_is_a_resource(self) -> None:
        kustomization = load(BASE.child("kustomization.yaml"))
        self.assertEqual(kustomization["kind"], "Kustomization")
        listed = kustomization["resources"]
        for name in listed:
            self.assertTrue(BASE.preauthChild(name).isfile(), name)
        present = sorted(p.basename() for p in BASE.children() if p.basename().endswith(".yaml"))
        self.assertEqual(sorted([*listed, "kustomization.yaml"]), present)
        images = [image["name"] for image in kustomization["images"]]
        self.assertEqual(images, [resources()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]])


class SchemaTests(SynchronousTestCase):
    def test_core_kinds_pass_the_strict_schemas_of_the_pinned_version(self) -> None:
        checked = []
        for kind, doc in resources().items():
            if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
                continue
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            checked.append(kind)
        self.assertEqual(sorted(checked), ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                           "PodDisruptionBudget", "Service/mediaproxy", "Service/mediaproxy-metrics"])

    def test_the_validator_does_refuse_a_wrong_field(self) -> None:
        doc = resources()["Deployment"]
        doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)

    def test_custom_resources_pass_their_vendored_schema(self) -> None:
        for (api_version, kind), path in CRD_SCHEMAS.items():
            schema = json.loads(path.getContent())
            jsonschema.Draft202012Validator.check_schema(schema)
            self.assertIn("Prometheus Operator", schema["$comment"])  # where it comes from
            doc = resources()[kind]
            self.assertEqual(doc["apiVersion"], api_version)
            jsonschema.Draft202012Validator(schema).validate(doc)
            doc["spec"]["endpoints"][0]["targetport"] = 9090
            with self.assertRaises(jsonschema.ValidationError):
                jsonschema.Draft202012Validator(schema).validate(doc)

    def test_yamllint_passes_every_yaml_file_under_deploy(self) -> None:
        files = [p.path for p in ROOT.child("deploy").walk() if p.basename().endswith((".yaml", ".yml"))]
        self.assertGreater(len(files), 8)
        result = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-d", YAMLLINT_CONFIG, *files],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


class ConsistencyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.docs = resources()
        self.pod = self.docs["Deployment"]["spec"]["template"]
        self.container = self.pod["spec"]["containers"][0]
        self.ports = {port["name"]: port["containerPort"] for port in self.container["ports"]}
        self.config = load_config(IMAGE_INI.path, SECRETS)

    def selects_pods(self, selector: dict[str, str]) -> None:
        labels = self.pod["metadata"]["labels"]
        self.assertTrue(selector and all(labels.get(k) == v for k, v in selector.items()), selector)

    def test_selectors_find_the_pods(self) -> None:
        self.selects_pods(self.docs["Deployment"]["spec"]["selector"]["matchLabels"])
        self.selects_pods(self.docs["Service/mediaproxy"]["spec"]["selector"])
        self.selects_pods(self.docs["Service/mediaproxy-metrics"]["spec"]["selector"])
        self.selects_pods(self.docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])

    def test_container_ports_are_the_ini_ports_and_services_use_their_names(self) -> None:
        self.assertEqual(self.ports["platform"], int(self.config.proxy.listen.split(":")[1]))
        self.assertEqual(self.ports["metrics"], int(self.config.metrics.listen.split(":")[1]))
        self.assertIn("interface=0.0.0.0", self.config.metrics.listen)
        platform = self.docs["Service/mediaproxy"]["spec"]
        self.assertEqual([p["targetPort"] for p in platform["ports"]], ["platform"])
        self.assertEqual(platform["sessionAffinity"], "None")
        metrics = self.docs["Service/mediaproxy-metrics"]["spec"]
        self.assertEqual([p["targetPort"] for p in metrics["ports"]], ["metrics"])

    def test_the_service_monitor_scrapes_the_metrics_service(self) -> None:
        monitor = self.docs["ServiceMonitor"]["spec"]
        service = self.docs["Service/mediaproxy-metrics"]
        labels = service["metadata"]["labels"]
        self.assertTrue(all(labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items()))
        platform_labels = self.docs["Service/mediaproxy"]["metadata"]["labels"]
        self.assertFalse(all(platform_labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items()))
        self.assertEqual([(e["port"], e["path"]) for e in monitor["endpoints"]], [("metrics", "/metrics")])
        self.assertIn("metrics", [p["name"] for p in service["spec"]["ports"]])

    def test_probes_and_the_grace_period_fit_the_drain(self) -> None:
        ready, alive = self.container["readinessProbe"]["httpGet"], self.container["livenessProbe"]["httpGet"]
        self.assertEqual((ready["path"], ready["port"]), ("/ready", "metrics"))
        self.assertEqual((alive["path"], alive["port"]), ("/health", "metrics"))
        pre_stop = sleep_seconds(self.container["lifecycle"]["preStop"])
        self.assertGreater(pre_stop, 0)
        grace = self.pod["spec"]["terminationGracePeriodSeconds"]
        self.assertGreater(grace, pre_stop + self.config.proxy.drain_seconds)
        strategy = self.docs["Deployment"]["spec"]["strategy"]["rollingUpdate"]
        self.assertEqual(strategy["maxUnavailable"], 0)

    def test_the_config_map_holds_the_image_ini_where_the_entry_point_reads_it(self) -> None:
        config_map = self.docs["ConfigMap"]
        (key, text), = config_map["data"].items()
        self.assertEqual(text, IMAGE_INI.getContent().decode(), "deploy/kubernetes/configmap.yaml must hold "
                                                                  "deploy/mediaproxy.ini unchanged")
        (mount,) = self.container["volumeMounts"]
        (volume,) = self.pod["spec"]["volumes"]
        self.assertEqual((volume["name"], volume["configMap"]["name"]), (mount["name"], config_map["metadata"]["name"]))
        self.assertEqual(f"{mount['mountPath']}/{key}", image_config_path())
        self.assertEqual(self.container["args"], ["--config", image_config_path()])

    def test_every_environment_reference_of_the_ini_comes_from_the_secret(self) -> None:
        values = [line for line in IMAGE_INI.getContent().decode().splitlines() if not line.startswith(";")]
        needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", "\n".join(values)))
        given = {env["name"]: env["valueFrom"]["secretKeyRef"] for env in self.container["env"]}
        self.assertEqual(set(given), needed)
        for name, ref in given.items():
            self.assertEqual((ref["name"], ref["key"]), ("mediaproxy-secrets", name))
        self.assertNotIn("Secret", self.docs)  # the keys are the operator's, never shipped

    def test_the_pod_runs_as_the_images_user_locked_down(self) -> None:
        from tests.test_deploy_container import one

        self.assertEqual(str(self.pod["spec"]["securityContext"]["runAsUser"]), one("USER"))
        security = self.container["securityContext"]
        self.assertEqual((security["allowPrivilegeEscalation"], security["readOnlyRootFilesystem"]), (False, True))
        self.assertIn("cpu", self.container["resources"]["limits"])

    def test_the_hpa_scales_the_deployment_on_a_metric_the_adapter_serves_and_the_proxy_exports(self) -> None:
        hpa = self.docs["HorizontalPodAutoscaler"]["spec"]
        self.assertEqual((hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]),
                         ("Deployment", self.docs["Deployment"]["metadata"]["name"]))
        (metric,) = hpa["metrics"]
        self.assertEqual(metric["type"], "Pods")
        name = metric["pods"]["metric"]["name"]
        self.assertEqual(name, "mediaproxy_calls_active")
        rules = load(BASE.child("prometheus-adapter").child("rules.yaml"))["rules"]
        served = {rule["name"]["as"]: rule for rule in rules}
        self.assertIn(name, served)
        rule = served[name]
        self.assertEqual(set(rule["resources"]["overrides"]), {"namespace", "pod"})
        series = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
        assert series is not None
        self.assertIn(series.group(1), {m.name for m in Metrics().registry.collect()})
        self.assertIn("<<.Series>>", rule["metricsQuery"])
        self.assertGreaterEqual(hpa["minReplicas"], 2)
        self.assertEqual(hpa["behavior"]["scaleDown"]["policies"][0]["type"], "Pods")
