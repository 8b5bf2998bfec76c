"""The one place an annotation backend is built: the spec's `annotation.backend` names the tool, and the
Airflow connection `backend_connection_id` names holds where it is and how to sign in.

Apart from the protocol (`annotation.backend`), so that a backend's module imports the protocol and
this module imports the backends, never the other way round. Imported by the triggerer: the
backends' own modules load only when one is built.
"""

from __future__ import annotations

from typing import Any

from edgeloop.annotation.backend import AnnotationBackend, BackendError
from edgeloop.spec import PipelineSpec


def backend_connection_id(spec: PipelineSpec) -> str:
    """The Airflow connection of the spec's annotation tool (`connections.label_studio` for Label Studio)."""
    connections = {"label_studio": spec.connections.label_studio}
    return connections[spec.annotation.backend]


def backend_from_connection(kind: str, conn: Any) -> AnnotationBackend:
    """The backend of the tool `kind` (a spec's `annotation.backend`), from its Airflow connection.

    Raise BackendError naming the kind when no backend of that kind exists, or naming the
    connection when a part of it is missing.
    """
    if kind == "label_studio":
        from edgeloop.annotation.label_studio import LabelStudioBackend, settings_from_connection

        return LabelStudioBackend.connect(settings_from_connection(conn))
    raise BackendError(f"no annotation backend '{kind}' (known: label_studio)")
