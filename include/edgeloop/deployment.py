"""What a spec may choose for Kubernetes: the allowlist set at deployment, not by spec authors.

A spec names the rollout job's image, the agent's image, the namespace, the service account,
the Kubernetes connection and the agent's Secret, but may only pick values the deployment
allows. The allowlist is a YAML file named by `EDGELOOP_DEPLOYMENT`, read when it is needed
(a task, a spec write), never when DAGs are parsed:

```yaml
kubernetes:
  job_images: [registry.example.com/edgeloop/bundle@sha256:<64 hex>]
  agent_images: [registry.example.com/edgeloop/agent@sha256:<64 hex>]
  namespaces: [edge]
  service_accounts: [edgeloop-rollout]
  kubernetes_conn_ids: [kubernetes_default]
  agent_secrets: [edgeloop-agent-keys]
```

Images in the file are pinned by digest (`@sha256:`); the local images of the devstack are the
one exception. Without the variable the allowlist is the local stack's: the spec defaults.
A file that is missing or malformed stops whatever needed it (fail closed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeloop.spec import PipelineSpec, RolloutSpec, SpecError

DEPLOYMENT_ENV = "EDGELOOP_DEPLOYMENT"
_LOCAL = RolloutSpec()
LOCAL_IMAGES = (_LOCAL.image, _LOCAL.agent_image)  # the devstack's own images, built locally
_PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


def _pinned(images: list[str]) -> list[str]:
    loose = [i for i in images if not _PINNED.match(i) and i not in LOCAL_IMAGES]
    if loose:
        raise ValueError(f"{loose} are not pinned by digest (<image>@sha256:<64 hex digits>)")
    return images


class KubernetesAllowlist(BaseModel):
    """The values each Kubernetes-bound spec field may take; the first of each list is the usual one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_images: list[str] = Field(default=[_LOCAL.image], min_length=1)
    agent_images: list[str] = Field(default=[_LOCAL.agent_image], min_length=1)
    namespaces: list[str] = Field(default=[_LOCAL.namespace], min_length=1)
    service_accounts: list[str] = Field(default=[_LOCAL.service_account], min_length=1)
    kubernetes_conn_ids: list[str] = Field(default=[_LOCAL.kubernetes_conn_id], min_length=1)
    agent_secrets: list[str] = Field(default=[_LOCAL.agent_secret], min_length=1)

    @field_validator("job_images", "agent_images")
    @classmethod
    def _images_pinned(cls, images: list[str]) -> list[str]:
        return _pinned(images)


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kubernetes: KubernetesAllowlist = KubernetesAllowlist()


# spec field (under `rollout`) -> allowlist entry, with what the value is to a reader
ALLOWLISTED_FIELDS: dict[str, tuple[str, str]] = {
    "image": ("job_images", "rollout job image"),
    "agent_image": ("agent_images", "agent image"),
    "namespace": ("namespaces", "namespace"),
    "service_account": ("service_accounts", "service account"),
    "kubernetes_conn_id": ("kubernetes_conn_ids", "Kubernetes connection"),
    "agent_secret": ("agent_secrets", "agent Secret"),
}


class DeploymentInvalid(Exception):
    """The deployment file cannot be read or says something malformed; the message names file and field."""


class NotAllowed(ValueError):
    """A spec chose a Kubernetes value the deployment does not allow; the message names the field(s)."""


@dataclass(frozen=True)
class Refusal:
    location: str  # e.g. rollout.image
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def parse_deployment(text: str, source: str = "<deployment>") -> DeploymentSettings:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DeploymentInvalid(f"{source}: not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DeploymentInvalid(f"{source}: a deployment file is a YAML mapping")
    try:
        return DeploymentSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DeploymentInvalid(f"{source}: {problems}") from exc


def load_deployment(environ: Mapping[str, str] | None = None) -> DeploymentSettings:
    """The deployment's settings: the file in EDGELOOP_DEPLOYMENT, or the local stack's when unset."""
    environ = os.environ if environ is None else environ
    configured = environ.get(DEPLOYMENT_ENV)
    if not configured:
        return DeploymentSettings()
    path = Path(configured)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentInvalid(f"{DEPLOYMENT_ENV}={path}: cannot be read: {exc}") from exc
    return parse_deployment(text, str(path))


def refusals(spec: PipelineSpec, settings: DeploymentSettings) -> list[Refusal]:
    """Every Kubernetes-bound field of the spec whose value the deployment does not allow."""
    out = []
    for field, (entry, what) in ALLOWLISTED_FIELDS.items():
        value = getattr(spec.rollout, field)
        allowed: list[str] = getattr(settings.kubernetes, entry)
        if value not in allowed:
            out.append(Refusal(f"rollout.{field}", f"{value!r} is not an allowed {what} (allowed: {allowed})"))
    return out


def spec_errors(spec: PipelineSpec, settings: DeploymentSettings, path: Path = Path("<spec>")) -> list[SpecError]:
    """`refusals` as spec errors, the way spec validation reports them."""
    return [SpecError(path, r.location, r.message) for r in refusals(spec, settings)]


def require_allowed(spec: PipelineSpec, settings: DeploymentSettings | None = None) -> None:
    """Raise NotAllowed naming each field outside the allowlist (read from the environment if not given)."""
    found = refusals(spec, settings if settings is not None else load_deployment())
    if found:
        raise NotAllowed(f"{spec.name}: " + "; ".join(str(r) for r in found))


def usual_choices(settings: DeploymentSettings) -> dict[str, str]:
    """The first allowed value of each field whose spec default the deployment does not allow.

    A spec written from a draft takes these, so that it names values the deployment allows.
    """
    out = {}
    for field, (entry, _) in ALLOWLISTED_FIELDS.items():
        allowed: list[str] = getattr(settings.kubernetes, entry)
        if getattr(_LOCAL, field) not in allowed:
            out[field] = allowed[0]
    return out
