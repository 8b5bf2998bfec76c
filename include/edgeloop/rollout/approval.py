"""The approval before production waves: Airflow's HITL ApprovalOperator that keeps the answer in XCom.

On "Reject" the ApprovalOperator skips its downstream tasks by raising inside `execute_complete`,
so its return value never reaches XCom; the rollback task needs the answer for the audit record
(who rejected, when). This subclass pushes the answer under `ANSWER_KEY` before deciding. Only the
spec's `rollout.approvers` may answer (the task's assigned users). Imported only by rollout DAGs
whose spec asks for approval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from edgeloop.spec import PipelineSpec

ANSWER_KEY = "answer"


def approvers(spec: PipelineSpec) -> list[dict[str, str]]:
    """The spec's approvers as the HITL task's assigned users: only they may answer it.

    Airflow compares a responder's user id with these ids; the simple auth manager's id is the user name.
    """
    return [{"id": name, "name": name} for name in spec.rollout.approvers]


def answer_of(event: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON-safe answer in a HITL trigger event; None for an error event (nothing was answered)."""
    if "error" in event:
        return None
    responded_at: Any = event.get("responded_at")
    return {
        "chosen_options": list(event.get("chosen_options") or []),
        "responded_by_user": event.get("responded_by_user"),
        "responded_at": responded_at.isoformat() if isinstance(responded_at, datetime) else responded_at,
    }


class RolloutApprovalOperator(ApprovalOperator):
    """ApprovalOperator whose answer (approve or reject, who, when) is always in XCom under `answer`."""

    @classmethod
    def for_spec(cls, spec: PipelineSpec) -> RolloutApprovalOperator:
        """The human answer asked before the production waves (`rollout.approval_required`)."""
        from edgeloop.rollout.tasks import APPROVAL_TASK_ID

        return cls(
            task_id=APPROVAL_TASK_ID,
            subject=f"{spec.name}: roll out to production?",
            # a passed gate's XCom, pushed by the triggerer, is JSON text already (`edgeloop.xcom.as_pushed`)
            body=(
                "Canary gate: {% set gate = ti.xcom_pull(task_ids='gate_canary') %}"
                "{{ gate if gate is string else gate | tojson }}"
            ),
            defaults=cls.REJECT,
            response_timeout=spec.rollout.approval_timeout,
            assigned_users=approvers(spec),
            trigger_rule="none_failed",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = answer_of(event)
        if answer is not None:
            context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
        return super().execute_complete(context=context, event=event)
