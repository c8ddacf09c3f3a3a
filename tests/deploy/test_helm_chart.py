"""The Helm chart (helm/eddy), rendered by a real helm and checked against the Kubernetes schemas (issue #9, req. 3).

Two values files are rendered: the chart's defaults (one CPU pipeline, a created Secret) and
``ci/gpu-values.yaml`` (several pipelines, GPU serving, autoscaling, an existing Secret, ServiceMonitor and the
Grafana dashboard). Every rendered object but the ServiceMonitor (a CRD the Kubernetes schemas do not know, checked
here by hand) is validated strictly with ``kubernetes-validate``; then the wiring between objects is checked: spec
files, ports, probes, Secret keys, labels, GPU scheduling, and the failures the chart must give for bad values.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipelines.spec import PipelineSpec, load_spec, load_specs, resolve_operator
from tests.deploy import REPO
from tests.deploy.conftest import CHART, GPU_VALUES, KUBE_VERSION, NAMESPACE, RELEASE, Helm, Render, Rendered

VALUES_FILES = {"default": (), "gpu": (GPU_VALUES,)}
SETTINGS = ("EDDY_BROKER", "EDDY_STATE", "EDDY_REGISTRY", "EDDY_SECRET")
SPEC_DIR = "/etc/eddy/pipelines"
GPU_RESOURCE = "nvidia.com/gpu"


@pytest.fixture(params=sorted(VALUES_FILES))
def rendered(request: pytest.FixtureRequest, render: Render) -> Rendered:
    """The chart rendered with each values file in turn."""
    return render(*VALUES_FILES[request.param])


def values_of(*values_files: Path) -> dict[str, Any]:
    """The chart's values with these files laid over the defaults (maps merge, anything else is replaced)."""

    def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in override.items():
            both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
            merged[key] = merge(base[key], value) if both_maps else value
        return merged

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for path in values_files:
        values = merge(values, yaml.safe_load(path.read_text(encoding="utf-8")))
    return values


def enabled_pipelines(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipelines the chart deploys for these values."""
    return {name: p for name, p in values["pipelines"].items() if p.get("enabled", True)}


def pipeline_of(deployment: dict[str, Any]) -> str:
    """The pipeline a worker Deployment runs (its ``eddy/pipeline`` label)."""
    return str(deployment["metadata"]["labels"]["eddy/pipeline"])


def worker(deployment: dict[str, Any]) -> dict[str, Any]:
    """The worker container of a Deployment."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def argument(container: dict[str, Any], flag: str) -> str:
    """The value after ``flag`` in the container's args."""
    args: list[str] = container["args"]
    return args[args.index(flag) + 1]


def rendered_specs(rendered: Rendered) -> dict[str, str]:
    """The ConfigMap's spec files by file name."""
    return dict(rendered.named("ConfigMap", f"{RELEASE}-eddy-pipelines")["data"])


# -- helm lint and the Kubernetes schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", sorted(VALUES_FILES))
def test_helm_lint_is_clean(helm: Helm, values_name: str) -> None:
    """``helm lint --strict`` (warnings fail too) passes with each values file."""
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for path in VALUES_FILES[values_name]:
        args += ["--values", str(path)]
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_every_manifest_is_valid_kubernetes(rendered: Rendered) -> None:
    """Each rendered object validates against the Kubernetes schemas in strict mode (no unknown fields)."""
    problems = []
    for manifest in rendered.manifests:
        if manifest["kind"] == "ServiceMonitor":
            continue  # a CRD: test_service_monitor_selects_every_worker_service checks it
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            problems.append(f"{manifest['kind']}/{manifest['metadata']['name']} at {where}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("values_name", sorted(VALUES_FILES))
def test_one_deployment_and_service_per_enabled_pipeline(render: Render, values_name: str) -> None:
    """A Deployment and a Service for each enabled pipeline, and none for a disabled one."""
    rendered = render(*VALUES_FILES[values_name])
    expected = {f"{RELEASE}-eddy-{name}" for name in enabled_pipelines(values_of(*VALUES_FILES[values_name]))}
    assert {m["metadata"]["name"] for m in rendered.of_kind("Deployment")} == expected
    assert {m["metadata"]["name"] for m in rendered.of_kind("Service")} == expected


# -- pipeline specs --------------------------------------------------------------------------------------------


def test_configmap_specs_load_as_the_worker_loads_them(rendered: Rendered, tmp_path: Path) -> None:
    """Every spec in the ConfigMap loads with ``load_specs`` (names and output topics unique across pipelines),
    is named after its file, and its operator imports with the params given."""
    files = rendered_specs(rendered)
    for file_name, text in files.items():
        (tmp_path / file_name).write_text(text, encoding="utf-8")
    specs = load_specs(sorted(tmp_path.iterdir()))
    assert sorted(f"{spec.name}.yaml" for spec in specs) == sorted(files)
    for spec in specs:
        if spec.operator.use is not None:
            resolve_operator(spec)


def test_default_pipeline_is_the_demo_example(render: Render) -> None:
    """The chart's default pipeline is pipelines/examples/demo-driftmoe.yaml, not a drifting copy of it."""
    specs = rendered_specs(render())
    assert list(specs) == ["demo.yaml"]
    shipped = load_spec(REPO / "pipelines" / "examples" / "demo-driftmoe.yaml")
    assert PipelineSpec.model_validate(yaml.safe_load(specs["demo.yaml"])) == shipped


def test_changing_a_spec_rolls_only_its_pipeline(render: Render) -> None:
    """A spec's checksum annotation changes with that spec alone, so only its pods roll."""

    def checksums(rendered: Rendered) -> dict[str, str]:
        return {
            pipeline_of(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/spec"]
            for d in rendered.of_kind("Deployment")
        }

    before = checksums(render(GPU_VALUES))
    after = checksums(render(GPU_VALUES, sets=("pipelines.demo.spec.batch.max=128",)))
    assert {name for name in before if before[name] != after[name]} == {"demo"}


def test_changing_a_connection_rolls_the_workers(render: Render) -> None:
    """Workers of a created Secret restart when a connection URL changes (environment is read at start only)."""

    def checksum(rendered: Rendered) -> str:
        deployment = rendered.named("Deployment", f"{RELEASE}-eddy-demo")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secret"])

    assert checksum(render()) != checksum(render(sets=("connections.broker=kafka://kafka-0:9092",)))


# -- workers: command, probes, settings, security ----------------------------------------------------------------


def test_workers_run_their_spec_on_the_probed_port(rendered: Rendered) -> None:
    """Each worker runs its own spec file from the ConfigMap, serves on the port its probes, its Service and the
    image's EXPOSE use, probes /healthz (startup, liveness) and /readyz (readiness)."""
    specs = rendered_specs(rendered)
    exposed = re.search(r"^EXPOSE\s+(\d+)", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert exposed is not None
    for deployment in rendered.of_kind("Deployment"):
        name = pipeline_of(deployment)
        container = worker(deployment)
        assert container["args"][:2] == ["run", f"{SPEC_DIR}/{name}.yaml"]
        (volume,) = (v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "spec")
        assert volume["configMap"]["items"] == [{"key": f"{name}.yaml", "path": f"{name}.yaml"}]
        assert f"{name}.yaml" in specs
        assert {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True} in container["volumeMounts"]

        port = int(argument(container, "--port"))
        assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        assert port == int(exposed.group(1))
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
        assert probes == {
            "startup": {"path": "/healthz", "port": "metrics"},
            "liveness": {"path": "/healthz", "port": "metrics"},
            "readiness": {"path": "/readyz", "port": "metrics"},
        }
        service = rendered.named("Service", deployment["metadata"]["name"])
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
        ]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_workers_read_their_settings_from_the_secret(rendered: Rendered) -> None:
    """EDDY_BROKER, EDDY_STATE, EDDY_REGISTRY and EDDY_SECRET come from keys of one Secret, the rendered one or the
    existing one named in the values (a missing key then stops the pod instead of falling back to embedded
    services)."""
    created = {m["metadata"]["name"]: m for m in rendered.of_kind("Secret")}
    for deployment in rendered.of_kind("Deployment"):
        env = {e["name"]: e for e in worker(deployment)["env"]}
        refs = {name: env[name]["valueFrom"]["secretKeyRef"] for name in SETTINGS}
        assert all(ref["key"] == name for name, ref in refs.items())
        (secret_name,) = {ref["name"] for ref in refs.values()}
        if created:
            assert set(created[secret_name]["data"]) == set(SETTINGS)
        else:
            assert secret_name == "eddy-connections"  # secret.existingSecret of gpu-values.yaml


def test_created_secret_holds_the_connections(render: Render) -> None:
    """The created Secret carries the connection URLs of the values and an EDDY_SECRET: the one given, else a
    random one."""
    values = values_of()
    (secret,) = render().of_kind("Secret")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert [data["EDDY_BROKER"], data["EDDY_STATE"], data["EDDY_REGISTRY"]] == [
        values["connections"]["broker"],
        values["connections"]["state"],
        values["connections"]["registry"],
    ]
    assert len(data["EDDY_SECRET"]) == 48
    (given,) = render(sets=("secret.eddySecret=s3cr3t",)).of_kind("Secret")
    assert base64.b64decode(given["data"]["EDDY_SECRET"]).decode() == "s3cr3t"


def test_workers_run_unprivileged_with_a_read_only_root(rendered: Rendered) -> None:
    """Non-root, no privilege escalation, no capabilities, a read-only root filesystem; EDDY_HOME and /tmp are
    writable scratch volumes; no service account token."""
    for deployment in rendered.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = worker(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        home = next(e["value"] for e in container["env"] if e["name"] == "EDDY_HOME")
        assert any(home.startswith(path + "/") for path in writable)
        assert "/tmp" in writable


# -- scaling: replicas, partitions, autoscaling --------------------------------------------------------------------


def test_replicas_never_exceed_partitions(rendered: Rendered) -> None:
    """No Deployment or autoscaler can run more workers than the partitions the worker creates."""
    autoscalers = {m["spec"]["scaleTargetRef"]["name"]: m for m in rendered.of_kind("HorizontalPodAutoscaler")}
    for deployment in rendered.of_kind("Deployment"):
        partitions = int(argument(worker(deployment), "--partitions"))
        autoscaler = autoscalers.get(deployment["metadata"]["name"])
        most = autoscaler["spec"]["maxReplicas"] if autoscaler else deployment["spec"]["replicas"]
        assert most <= partitions, deployment["metadata"]["name"]
        # a surge pod would be one consumer too many: it would get no partition and never turn ready
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_autoscaled_pipeline_gets_an_autoscaler_instead_of_replicas(render: Render) -> None:
    """autoscaling.enabled: the HorizontalPodAutoscaler owns the replica count, within the values given."""
    rendered = render(GPU_VALUES)
    autoscaling = values_of(GPU_VALUES)["pipelines"]["demo"]["autoscaling"]
    name = f"{RELEASE}-eddy-demo"
    assert "replicas" not in rendered.named("Deployment", name)["spec"]
    (autoscaler,) = rendered.of_kind("HorizontalPodAutoscaler")
    spec = autoscaler["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (autoscaling["minReplicas"], autoscaling["maxReplicas"])
    (metric,) = spec["metrics"]
    assert metric["resource"]["target"]["averageUtilization"] == autoscaling["targetCPUUtilizationPercentage"]


@pytest.mark.parametrize(
    ("values_files", "sets", "message"),
    [
        ((), ("pipelines.demo.replicas=4",), "pipelines.demo: replicas (4) must be <= partitions (3)"),
        (
            (GPU_VALUES,),
            ("pipelines.demo.autoscaling.maxReplicas=8",),
            "pipelines.demo: autoscaling.maxReplicas (8) must be <= partitions (6)",
        ),
        (
            (GPU_VALUES,),
            ("pipelines.demo.autoscaling.minReplicas=6", "pipelines.demo.autoscaling.maxReplicas=4"),
            "pipelines.demo: autoscaling.minReplicas (6) must be <= autoscaling.maxReplicas (4)",
        ),
        (
            (),
            ("pipelines.demo.spec.name=other",),
            'pipelines.demo.spec.name is "other": it must be the pipeline\'s key',
        ),
        (
            (GPU_VALUES,),
            ("pipelines.demo.resources.requests.cpu=null",),
            "pipelines.demo: autoscaling on CPU needs resources.requests.cpu",
        ),
        ((), ("secret.create=false",), "secret.create is false and secret.existingSecret is empty"),
    ],
    ids=["replicas", "max-replicas", "min-above-max", "spec-name", "cpu-request", "no-secret"],
)
def test_values_the_chart_refuses(
    render: Render, values_files: tuple[Path, ...], sets: tuple[str, ...], message: str
) -> None:
    """Values no schema can check make ``helm template`` fail with a message that says what to change."""
    result = render(*values_files, sets=sets)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("sets", "problem"),
    [
        (("pipelines.demo.replicas=-1",), "at '/pipelines/demo/replicas': minimum: got -1, want 0"),
        (("pipelines.demo.replica=2",), "additional properties 'replica' not allowed"),
        (("pipelines.demo.partitions=0",), "at '/pipelines/demo/partitions': minimum: got 0, want 1"),
        (("connections.broker=embedded",), "at '/connections/broker': 'embedded' does not match pattern"),
        (("pipelines.live_ctr.partitions=1",), "'live_ctr' does not match pattern"),
    ],
    ids=["negative-replicas", "misspelt-key", "no-partitions", "embedded-broker", "pipeline-name"],
)
def test_schema_rejects_bad_values(render: Render, sets: tuple[str, ...], problem: str) -> None:
    """values.schema.json stops bad values before anything renders, and helm says where they are."""
    result = render(sets=sets)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert problem in result.stderr


# -- GPU scheduling ---------------------------------------------------------------------------------------------


def test_gpu_pipelines_get_gpus_gpu_nodes_and_the_cuda_image(render: Render) -> None:
    """gpu: true adds the GPU limit, the GPU node selector (merged with the pipeline's) and toleration, and the
    CUDA image; other pipelines get none of them."""
    values = values_of(GPU_VALUES)
    gpu = values["gpu"]
    pipelines = enabled_pipelines(values)
    deployments = render(GPU_VALUES).of_kind("Deployment")
    assert {pipeline_of(d) for d in deployments if pipelines[pipeline_of(d)].get("gpu")} == {
        "demo-serve",
        "interactions-tpp",
    }
    for deployment in deployments:
        settings = pipelines[pipeline_of(deployment)]
        pod = deployment["spec"]["template"]["spec"]
        container = worker(deployment)
        limits = container["resources"].get("limits", {})
        if settings.get("gpu"):
            assert limits[GPU_RESOURCE] == gpu["perPod"]
            assert pod["nodeSelector"] == {**gpu["nodeSelector"], **settings.get("nodeSelector", {})}
            assert all(t in pod["tolerations"] for t in gpu["tolerations"])
            assert container["image"] == f"{values['image']['repository']}:{values['image']['gpuTag']}"
        else:
            assert GPU_RESOURCE not in limits
            assert "nodeSelector" not in pod and "tolerations" not in pod
            assert container["image"] == f"{values['image']['repository']}:{values['image']['tag']}"


# -- metrics, dashboard, chart metadata ---------------------------------------------------------------------------


def test_service_monitor_selects_every_worker_service(render: Render) -> None:
    """The ServiceMonitor (monitoring.coreos.com/v1) selects exactly the worker Services of the release in its
    namespace and scrapes their metrics port at /metrics, with the labels Prometheus selects it by."""
    rendered = render(GPU_VALUES)
    settings = values_of(GPU_VALUES)["metrics"]["serviceMonitor"]
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert settings["labels"].items() <= monitor["metadata"]["labels"].items()
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = spec["selector"]["matchLabels"]
    selected = [s for s in rendered.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(
        d["metadata"]["name"] for d in rendered.of_kind("Deployment")
    )
    (endpoint,) = spec["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "interval": settings["interval"],
        "scrapeTimeout": settings["scrapeTimeout"],
    }
    assert all(any(p["name"] == endpoint["port"] for p in s["spec"]["ports"]) for s in selected)


def test_service_monitor_and_dashboard_are_opt_in(render: Render) -> None:
    """Without the Prometheus Operator's CRDs a default install must not need them."""
    kinds = {(m["kind"], m["metadata"]["name"]) for m in render().manifests}
    assert not any(kind == "ServiceMonitor" for kind, _ in kinds)
    assert ("ConfigMap", f"{RELEASE}-eddy-dashboard") not in kinds


def test_dashboard_configmap_carries_the_chart_dashboard(render: Render) -> None:
    """The dashboard ConfigMap holds dashboards/eddy.json unchanged, labelled for Grafana's sidecar."""
    settings = values_of(GPU_VALUES)["grafanaDashboard"]
    dashboard = render(GPU_VALUES).named("ConfigMap", f"{RELEASE}-eddy-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == settings["namespace"]
    assert dashboard["metadata"]["annotations"] == settings["annotations"]
    shipped = json.loads((CHART / "dashboards" / "eddy.json").read_text(encoding="utf-8"))
    assert json.loads(dashboard["data"]["eddy.json"]) == shipped


def test_chart_app_version_is_the_package_version() -> None:
    """The default image tag (appVersion) is the eddyml version the image is built from."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["appVersion"] == project["version"]
