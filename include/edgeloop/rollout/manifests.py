"""Kubernetes objects for the edge agent of a `kubernetes` group: its DaemonSet, config and orders.

A group whose devices are Kubernetes nodes (KubeEdge) runs the agent as a DaemonSet on the
group's nodes (`edgeloop agent-manifests` prints the objects for the platform team):
- ConfigMap `<daemonset>-agent`: `agent.yaml`, the agent's config; the device id is the node
  name (downward API), the state lives in an emptyDir, no secret is in it;
- Secret `spec.rollout.agent_secret` (made by the platform team, never rendered here): the
  control key, mounted read-only as a file;
- ConfigMap `<daemonset>-asg-<hash>`: one signed assignment (`assignment.json`), made by the
  rollout job for each wave. The job points the pod template's `assignment` volume at it, so
  the DaemonSet's rolling update (its `maxUnavailable` budget) paces the new model over the
  nodes; each new pod verifies the order, fetches and checks the artifact, self-tests it, and
  only then passes its readiness probe (`/readyz`). A model that fails stays unready, the
  rollout stalls within the budget, and the job reports it incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeloop.contract.keys import Keyring
from edgeloop.spec import PipelineSpec, agent_config_name, assignment_config_name, daemonset_name

AGENT_PORT = 9464
AGENT_UID = 10001
CONFIG_DIR = "/etc/edgeloop"
STATE_DIR = "/var/lib/edgeloop-agent"
EDGE_ROLE_LABEL = "node-role.kubernetes.io/edge"
# Kafka client settings that may carry a secret never go into a ConfigMap.
SECRET_SETTING_WORDS = ("password", "secret", "key", "token", "jaas")


def public_kafka_settings(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """Client settings safe to keep in a ConfigMap (credentials go through Secrets, see the README)."""
    return {
        k: v
        for k, v in kafka_config.items()
        if not any(word in k.lower() for word in SECRET_SETTING_WORDS)
        and not k.startswith(("group.", "enable.auto", "auto.offset"))
    }


def agent_configmap(
    spec: PipelineSpec, group: str, kafka_config: Mapping[str, Any], trusted: Keyring
) -> dict[str, Any]:
    """ConfigMap with the agent's `agent.yaml` and the public keys its orders must be signed with
    (`trusted.pem`, mounted as a directory so that a rotated key reaches running agents)."""
    import yaml

    from edgeloop.fleet.agents import agent_config

    config = agent_config(spec, group, "placeholder", public_kafka_settings(kafka_config), STATE_DIR)
    del config["device_id"]
    config.update(
        {
            "device_id_env": "NODE_NAME",
            "trusted_keys_file": f"{CONFIG_DIR}/trusted/trusted.pem",
            "identity_key_file": f"{CONFIG_DIR}/keys/{{device_id}}.key",
            "control_topic": False,
            "assignment_file": f"{CONFIG_DIR}/assignment/assignment.json",
            "http": {"host": "0.0.0.0", "port": AGENT_PORT},  # noqa: S104 - the kubelet probes the pod's address
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": agent_config_name(spec, group),
            "namespace": spec.rollout.namespace,
            "labels": _labels(spec, group),
        },
        "data": {"agent.yaml": yaml.safe_dump(config, sort_keys=False), "trusted.pem": trusted.pem().decode()},
    }


def assignment_configmap(spec: PipelineSpec, group: str, assignment_id: str, wire: bytes) -> dict[str, Any]:
    """ConfigMap holding one signed assignment (the rollout job makes one per wave)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": assignment_config_name(spec, group, assignment_id),
            "namespace": spec.rollout.namespace,
            "labels": {**_labels(spec, group), "edgeloop.dev/assignment": _label_value(assignment_id)},
        },
        "data": {"assignment.json": wire.decode()},
    }


def agent_daemonset(
    spec: PipelineSpec,
    group: str,
    node_labels: Mapping[str, str],
    *,
    image: str | None = None,
    assignment_config: str | None = None,
) -> dict[str, Any]:
    """The group's agent DaemonSet: on the group's edge nodes only, `restricted` Pod Security, probes on /readyz."""
    name = daemonset_name(spec, group)
    pod_labels = {"app.kubernetes.io/name": "edgeloop-agent", "app.kubernetes.io/instance": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": spec.rollout.namespace,
            "labels": {**pod_labels, **_labels(spec, group)},
        },
        "spec": {
            "selector": {"matchLabels": pod_labels},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": int_or_percent(spec.rollout.max_unavailable)},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {"edgeloop.dev/model-version": "0"}},
                "spec": {
                    "nodeSelector": dict(node_labels),
                    "tolerations": [{"key": EDGE_ROLE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": AGENT_UID,
                        "fsGroup": AGENT_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_agent_container(spec, image)],
                    "volumes": _agent_volumes(spec, group, assignment_config),
                },
            },
        },
    }


def _agent_container(spec: PipelineSpec, image: str | None) -> dict[str, Any]:
    """The agent container: non-root, read-only root filesystem, probes on /readyz and /healthz."""
    return {
        "name": "agent",
        "image": image or spec.rollout.agent_image,
        "args": ["--config", f"{CONFIG_DIR}/agent.yaml"],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "ports": [{"name": "http", "containerPort": AGENT_PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20},
        "resources": {
            "requests": {"cpu": "50m", "memory": "96Mi"},
            "limits": {"memory": "200Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": f"{CONFIG_DIR}/agent.yaml", "subPath": "agent.yaml"},
            {"name": "keys", "mountPath": f"{CONFIG_DIR}/keys", "readOnly": True},
            {"name": "trusted", "mountPath": f"{CONFIG_DIR}/trusted", "readOnly": True},
            {"name": "assignment", "mountPath": f"{CONFIG_DIR}/assignment", "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
        ],
    }


def _agent_volumes(spec: PipelineSpec, group: str, assignment_config: str | None) -> list[dict[str, Any]]:
    """The agent's config, the nodes' keys, the trusted keys, the current assignment (optional) and its state."""
    return [
        {"name": "config", "configMap": {"name": agent_config_name(spec, group)}},
        {
            # the nodes' own keys, one item per node (`<node name>.key`), made at enrolment
            "name": "keys",
            "secret": {"secretName": spec.rollout.agent_secret, "defaultMode": 0o440},
        },
        {
            "name": "trusted",
            "configMap": {
                "name": agent_config_name(spec, group),
                "items": [{"key": "trusted.pem", "path": "trusted.pem"}],
            },
        },
        {
            "name": "assignment",
            "configMap": {"name": assignment_config or assignment_config_name(spec, group, "none"), "optional": True},
        },
        {"name": "state", "emptyDir": {"sizeLimit": "256Mi"}},
    ]


def daemonset_patch(
    spec: PipelineSpec, group: str, model_version: str, image: str, assignment_config: str, assignment_id: str
) -> dict[str, Any]:
    """Strategic-merge patch for one wave: the agent image, the assignment volume, the rolling-update budget."""
    annotations = {"edgeloop.dev/model-version": model_version, "edgeloop.dev/assignment": assignment_id}
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": int_or_percent(spec.rollout.max_unavailable)},
            },
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containers": [{"name": "agent", "image": image}],
                    "volumes": [{"name": "assignment", "configMap": {"name": assignment_config, "optional": True}}],
                },
            },
        },
    }


def int_or_percent(value: str) -> int | str:
    """IntOrString as the API wants it: "25%" stays a string, "3" becomes the number 3."""
    return int(value) if value.isdigit() else value


def _labels(spec: PipelineSpec, group: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "edgeloop",
        "edgeloop.dev/pipeline": _label_value(spec.name),
        "edgeloop.dev/group": _label_value(group),
    }


def _label_value(text: str) -> str:
    """A label value: at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:63]
    return cleaned.strip("._-") or "x"
