"""The pod that runs one wave's rollout job on Kubernetes (KubernetesPodOperator).

Built inside the task at run time, so that parsing the DAG never imports the Kubernetes
client. Secrets reach the pod only as references to Kubernetes Secrets; the rendered pod
holds no secret value.
"""

from __future__ import annotations

from typing import Any

from edgeloop.spec import PipelineSpec

# Kubernetes Secrets the job reads, as (env var, secret name, key). Created by the platform
# team (helm-values/), never by edgeloop.
SIGNING_SECRET = ("EDGELOOP_SIGNING_KEY", "edgeloop-control", "signing-key")
CONNECTIONS_SECRET = "edgeloop-connections"  # noqa: S105 - a Secret's name; one key per kind: kafka, s3, mlflow


def job_secrets(spec: PipelineSpec) -> list[tuple[str, str, str]]:
    """The signing key and the pipeline's connections as `AIRFLOW_CONN_<ID>`, each a Secret reference.

    Kafka carries the orders; S3 holds the pause flag (`rollout.pause`) and, with MLflow, the
    version's ONNX file the job publishes.
    """
    connections = spec.connections
    kinds = (("kafka", connections.kafka), ("s3", connections.s3), ("mlflow", connections.mlflow))
    return [SIGNING_SECRET, *((f"AIRFLOW_CONN_{conn.upper()}", CONNECTIONS_SECRET, key) for key, conn in kinds)]


def job_arguments(spec: PipelineSpec, group: str, model_version: str, wave: int, rollout_id: str) -> list[str]:
    return [
        "rollout-job",
        "--pipeline",
        spec.name,
        "--group",
        group,
        "--model-version",
        model_version,
        "--wave",
        str(wave),
        "--rollout-id",
        rollout_id,
    ]


def rollout_pod_operator(
    spec: PipelineSpec, group: str, model_version: str, wave: int, rollout_id: str, task_id: str = "rollout_job"
) -> Any:
    """A KubernetesPodOperator for one group's job: non-root, read-only root filesystem, no escalation."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    rollout = spec.rollout
    resources = k8s.V1ResourceRequirements(
        requests={"cpu": rollout.resources.cpu, "memory": rollout.resources.memory},
        limits={"cpu": rollout.resources.cpu, "memory": rollout.resources.memory},
    )
    security = k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=50000,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )
    return KubernetesPodOperator(
        task_id=task_id,
        kubernetes_conn_id=rollout.kubernetes_conn_id,
        namespace=rollout.namespace,
        name=f"{spec.name.replace('_', '-')}-rollout-{group}",
        image=rollout.image,
        cmds=["edgeloop"],
        arguments=job_arguments(spec, group, model_version, wave, rollout_id),
        labels={"app.kubernetes.io/name": "edgeloop-rollout", "edgeloop.dev/pipeline": spec.name.replace("_", "-")},
        service_account_name=rollout.service_account,
        container_resources=resources,
        container_security_context=security,
        xcom_sidecar_container_security_context=security,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, fs_group=0, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")
        ),
        secrets=[Secret("env", env, name, key) for env, name, key in job_secrets(spec)],
        env_vars={"PYTHONPATH": "/opt/airflow/include", "EDGELOOP_PIPELINES_DIR": "/opt/airflow/include/pipelines"},
        volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())],
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],  # noqa: S108 - the pod's own emptyDir
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        startup_timeout_seconds=300,
    )


def render_pod(operator: Any) -> dict[str, Any]:
    """The pod manifest the operator would create, built offline (no API server needed)."""
    from kubernetes.client import ApiClient

    pod = operator.build_pod_request_obj(dry_run=True)
    return dict(ApiClient().sanitize_for_serialization(pod))
