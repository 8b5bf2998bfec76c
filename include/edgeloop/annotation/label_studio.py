"""The Label Studio backend: one project per pipeline, batches as tagged tasks, label-studio-sdk calls.

Tasks carry the batch id and record id in their data (`edgeloop_batch`, `edgeloop_record_id`)
so a batch is found with a Data Manager filter, a retried import finds what it already
created, and a person can filter the project by batch (each batch also gets a saved tab).
The model's prediction is imported with each task as a pre-annotation (`model_version` set).

Every call goes through `_call`, which retries transient failures (connection errors,
timeouts, HTTP 429 and 5xx) with capped exponential backoff and jitter, then raises
`BackendUnavailable` naming the server and the operation. Requests that create things are
retried only when the request cannot have reached the server, and imports re-check what
exists before trying again, so a retry never duplicates a task.

The SDK is imported lazily: this module is imported by the triggerer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from xml.sax.saxutils import quoteattr

from edgeloop.annotation.backend import (
    BOT_MODEL_VERSION,
    AnnotationResult,
    BackendError,
    BackendUnavailable,
    BatchProgress,
    OpenTask,
    ProjectRef,
    TaskPayload,
    TaskResult,
)
from edgeloop.spec import PipelineSpec
from edgeloop.storage import RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_KEY = "edgeloop_batch"
RECORD_KEY = "edgeloop_record_id"
CHOICES_NAME = "label"
RECORD_TAG = "record"
IMAGE_TAG = "image"
IMPORT_CHUNK = 500
# Django refuses more than 1000 query fields by default; keep id lists well below.
EXPORT_CHUNK = 250
EXPORT_WORKERS = 4
LIST_PAGE = 1000
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_NOT_SENT_STATUS = frozenset({429, 502, 503, 504})
LS_RETRY = RetryPolicy(attempts=6, base_delay=0.5, max_delay=8.0)


@dataclass(frozen=True)
class LabelStudioSettings:
    """Where the server is and how to authenticate (a legacy API token: `Authorization: Token ...`)."""

    url: str
    token: str
    timeout: float = 60.0

    def __repr__(self) -> str:  # never print the token
        return f"LabelStudioSettings(url={self.url!r}, timeout={self.timeout})"


def settings_from_connection(conn: Any, *, timeout: float = 60.0) -> LabelStudioSettings:
    """Settings from an Airflow connection: host (with scheme) or schema+host+port; token in password.

    `extra.token` is accepted too. Raises BackendError naming the connection when a part is missing.
    """
    conn_id = getattr(conn, "conn_id", "?")
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        raise BackendError(f"connection '{conn_id}': no host (the Label Studio URL)")
    if "://" not in host:
        scheme = getattr(conn, "schema", None) or "http"
        host = f"{scheme}://{host}"
    port = getattr(conn, "port", None)
    if port and host.count(":") < 2:
        host = f"{host}:{port}"
    extra = getattr(conn, "extra_dejson", None) or {}
    token = getattr(conn, "password", None) or extra.get("token")
    if not token:
        raise BackendError(f"connection '{conn_id}': no API token (password or extra.token)")
    return LabelStudioSettings(url=host.rstrip("/"), token=str(token), timeout=float(extra.get("timeout", timeout)))


# --- label config -------------------------------------------------------------------------------


def project_title(spec: PipelineSpec) -> str:
    return f"edgeloop {spec.name}"


def label_config(spec: PipelineSpec) -> str:
    """The labelling interface for a spec: the record as a table, its image if it has one, the labels."""
    image = spec.field_with_role("image_ref")
    lines = ["<View>", '  <Header value="$title"/>']
    if image is not None:
        lines.append(f'  <Image name="{IMAGE_TAG}" value="$image" zoom="true"/>')
    lines.append(f'  <Table name="{RECORD_TAG}" value="$record"/>')
    choices = f'name="{CHOICES_NAME}" toName="{RECORD_TAG}" choice="single-radio" showInline="true" required="true"'
    lines.append(f"  <Choices {choices}>")
    lines.extend(f"    <Choice value={quoteattr(label)}/>" for label in spec.annotation.labels)
    lines += ["  </Choices>", "</View>"]
    return "\n".join(lines)


def image_label_config(labels: Sequence[str]) -> str:
    """The labelling interface for image classification: the frame (zoomable) and one choice among `labels`.

    The task's `image` field holds the URL the annotator's browser loads (a presigned GET of the
    frame in the bucket, `edgeloop.annotation.batch.presigned_image_url`): Label Studio stores the
    URL, not a copy of the image. Results name `toName="image"` (`choices_result(label, IMAGE_TAG)`).
    """
    names = [str(label) for label in labels]
    if not names or len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise ValueError(f"image labels must be distinct, non-empty names, got {names}")
    choices = f'name="{CHOICES_NAME}" toName="{IMAGE_TAG}" choice="single-radio" showInline="true" required="true"'
    lines = ["<View>", '  <Header value="$title"/>', f'  <Image name="{IMAGE_TAG}" value="$image" zoom="true"/>']
    lines.append(f"  <Choices {choices}>")
    lines.extend(f"    <Choice value={quoteattr(label)}/>" for label in names)
    lines += ["  </Choices>", "</View>"]
    return "\n".join(lines)


def choices_result(label: str, to_name: str = RECORD_TAG) -> list[dict[str, Any]]:
    """The result JSON of one chosen label, as an annotation or a prediction (`to_name`: the object labelled)."""
    return [{"from_name": CHOICES_NAME, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


def labels_of(result: Any) -> tuple[str, ...]:
    """The labels chosen in an annotation result (our Choices control only)."""
    found: list[str] = []
    for item in result or []:
        if not isinstance(item, dict) or item.get("from_name") != CHOICES_NAME:
            continue
        choices = (item.get("value") or {}).get("choices") or []
        found.extend(str(c) for c in choices)
    return tuple(found)


def task_json(task: TaskPayload, labels: Sequence[str]) -> dict[str, Any]:
    """One task to import: display data, the edgeloop keys, and the prediction as a pre-annotation."""
    title = " | ".join(
        str(v) for v in (task.record_id, task.fields.get("device_id"), task.fields.get("ts")) if v not in (None, "")
    )
    data: dict[str, Any] = {
        "title": f"Record {title}",
        "record": dict(task.fields),
        BATCH_KEY: task.batch_id,
        RECORD_KEY: task.record_id,
    }
    if task.image_url is not None:
        data["image"] = task.image_url
    body: dict[str, Any] = {"data": data, "meta": {BATCH_KEY: task.batch_id, RECORD_KEY: task.record_id}}
    if task.prediction is not None and task.prediction in labels:
        prediction: dict[str, Any] = {
            "model_version": task.model_version or "unknown",
            "result": choices_result(task.prediction),
        }
        if task.confidence is not None:
            prediction["score"] = float(task.confidence)
        body["predictions"] = [prediction]
    return body


# --- Data Manager filters ------------------------------------------------------------------------


def _filter(name: str, operator: str, kind: str, value: Any) -> dict[str, Any]:
    return {"filter": f"filter:tasks:{name}", "operator": operator, "type": kind, "value": value}


def batch_filter(batch_id: str) -> dict[str, Any]:
    return _filter(f"data.{BATCH_KEY}", "equal", "String", batch_id)


def _query(*items: dict[str, Any]) -> str:
    return json.dumps({"filters": {"conjunction": "and", "items": list(items)}})


# --- errors and retries --------------------------------------------------------------------------


def _short(text: Any, limit: int = 300) -> str:
    """A server answer cut to something a log line can hold (error pages are whole HTML documents)."""
    flat = " ".join(str(text).split())
    if "<html" in flat.lower():
        start = flat.lower().find("<title>")
        end = flat.lower().find("</title>")
        flat = flat[start + 7 : end] if 0 <= start < end else "an HTML error page"
    return flat[:limit]


def _classify(exc: BaseException) -> tuple[bool, bool, str]:
    """(retryable, certainly not processed by the server, description) of a failed call."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(exc, ApiError):
        status = int(exc.status_code or 0)
        return status in _RETRY_STATUS, status in _NOT_SENT_STATUS, f"HTTP {status}: {_short(exc.body)}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True, True, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TransportError):
        return True, False, f"{type(exc).__name__}: {exc}"
    return False, False, f"{type(exc).__name__}: {exc}"


class LabelStudioBackend:
    """`AnnotationBackend` on a Label Studio server (community edition 1.23 or newer)."""

    kind = "label_studio"

    def __init__(self, client: Any, url: str, *, retry: RetryPolicy = LS_RETRY) -> None:
        self.client = client  # a label_studio_sdk.LabelStudio
        self.url = url.rstrip("/")
        self.retry = retry
        self._users: dict[int, str] | None = None

    @classmethod
    def connect(cls, settings: LabelStudioSettings, *, retry: RetryPolicy = LS_RETRY) -> LabelStudioBackend:
        """A backend with its own SDK client (legacy token auth, the settings' timeout)."""
        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=settings.url, api_key=settings.token, timeout=settings.timeout)
        return cls(client, settings.url, retry=retry)

    def __repr__(self) -> str:
        return f"LabelStudioBackend({self.url})"

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T], *, creates: bool = False) -> T:
        """Run one SDK call with retries; `creates` limits retries to failures the server never processed."""
        started = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call()
            except Exception as exc:
                retryable, not_sent, description = _classify(exc)
                if not retryable or (creates and not not_sent):
                    if retryable:  # a create that may have happened: the caller re-checks and retries
                        raise BackendUnavailable(f"Label Studio at {self.url}: {what}: {description}") from exc
                    raise BackendError(f"Label Studio at {self.url}: {what}: {description}") from exc
                if attempt == self.retry.attempts:
                    waited = time.monotonic() - started
                    raise BackendUnavailable(
                        f"Label Studio at {self.url}: {what}: gave up after {attempt} attempts in {waited:.1f}s: "
                        f"{description}"
                    ) from exc
                pause = self.retry.delay(attempt)
                log.warning(
                    "Label Studio %s: attempt %d failed (%s); retrying in %.2fs", what, attempt, description, pause
                )
                time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _tasks_page(self, project_id: int, query: str, page_size: int, fields: str = "task_only") -> Any:
        return self._call(
            f"list tasks of project {project_id}",
            lambda: self.client.tasks.list(project=project_id, query=query, fields=fields, page_size=page_size),
        )

    def _count(self, project_id: int, *items: dict[str, Any]) -> int:
        pager = self._tasks_page(project_id, _query(*items), 1)
        return int(getattr(pager.response, "total", 0) or 0)

    def _iter_tasks(self, project_id: int, query: str, limit: int | None = None) -> Iterator[Any]:
        size = min(LIST_PAGE, limit) if limit else LIST_PAGE
        page = 1
        seen = 0
        while True:

            def fetch(page: int = page) -> Any:
                return self.client.tasks.list(
                    project=project_id, query=query, fields="task_only", page_size=size, page=page
                )

            pager = self._call(f"list tasks of project {project_id} (page {page})", fetch)
            items = list(pager.items or [])
            for item in items:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            total = int(getattr(pager.response, "total", 0) or 0)
            if not items or page * size >= total:
                return
            page += 1

    # --- AnnotationBackend ----------------------------------------------------------------

    def ensure_project(self, spec: PipelineSpec) -> ProjectRef:
        title = project_title(spec)
        config = label_config(spec)
        found = [
            p
            for p in self._call(f"find project '{title}'", lambda: list(self.client.projects.list(title=title)))
            if p.title == title
        ]
        if found:
            project = min(found, key=lambda p: p.id)
            current = self._call(f"read project {project.id}", lambda: self.client.projects.get(project.id))
            if (current.label_config or "").strip() != config:
                log.info("project %s: label config differs from the spec, updating it", project.id)
                self._call(
                    f"update the label config of project {project.id} ('{title}')",
                    lambda: self.client.projects.update(project.id, label_config=config),
                )
            return ProjectRef(id=int(project.id), title=title, url=f"{self.url}/projects/{project.id}")
        created = self._call(
            f"create project '{title}'",
            lambda: self.client.projects.create(
                title=title,
                description=(spec.description or f"edgeloop annotation batches of pipeline {spec.name}")[:1000],
                label_config=config,
                show_skip_button=True,
            ),
            creates=True,
        )
        return ProjectRef(id=int(created.id), title=title, url=f"{self.url}/projects/{created.id}")

    def batch_tasks(self, project: ProjectRef, batch_id: str) -> dict[str, int]:
        if self._count(project.id, batch_filter(batch_id)) == 0:
            return {}
        found: dict[str, int] = {}
        for task in self._iter_tasks(project.id, _query(batch_filter(batch_id))):
            record = (task.data or {}).get(RECORD_KEY)
            if record is not None:
                found.setdefault(str(record), int(task.id))
        return found

    def import_tasks(self, project: ProjectRef, tasks: Sequence[TaskPayload]) -> dict[str, int]:
        labels = self._labels(project)
        created: dict[str, int] = {}
        for start in range(0, len(tasks), IMPORT_CHUNK):
            chunk = list(tasks[start : start + IMPORT_CHUNK])
            for attempt in range(1, self.retry.attempts + 1):
                body = [task_json(t, labels) for t in chunk]
                try:
                    response = self._call(
                        f"import {len(body)} tasks into project {project.id}",
                        lambda body=body: self.client.projects.import_tasks(  # type: ignore[misc]
                            project.id, request=body, return_task_ids=True
                        ),
                        creates=True,
                    )
                except BackendUnavailable:
                    if attempt == self.retry.attempts:
                        raise
                    time.sleep(self.retry.delay(attempt))
                    # the import may have happened: keep only what is still missing
                    batches = {t.batch_id for t in chunk}
                    present: dict[str, int] = {}
                    for batch in batches:
                        present.update(self.batch_tasks(project, batch))
                    created.update({t.record_id: present[t.record_id] for t in chunk if t.record_id in present})
                    chunk = [t for t in chunk if t.record_id not in present]
                    if not chunk:
                        break
                    continue
                ids = list(response.task_ids or [])
                if len(ids) != len(chunk):
                    raise BackendError(
                        f"Label Studio at {self.url}: import into project {project.id} returned {len(ids)} task ids "
                        f"for {len(chunk)} tasks"
                    )
                created.update({t.record_id: int(i) for t, i in zip(chunk, ids, strict=True)})
                break
        return created

    def progress(self, project: ProjectRef, batch_id: str) -> BatchProgress:
        batch = batch_filter(batch_id)
        total = self._count(project.id, batch)
        if total == 0:
            return BatchProgress(tasks=0, labelled=0, skipped=0)
        labelled = self._count(project.id, batch, _filter("total_annotations", "greater", "Number", 0))
        skipped = self._count(
            project.id,
            batch,
            _filter("total_annotations", "equal", "Number", 0),
            _filter("cancelled_annotations", "greater", "Number", 0),
        )
        return BatchProgress(tasks=total, labelled=labelled, skipped=skipped)

    def fetch_results(self, project: ProjectRef, task_ids: Sequence[int]) -> list[TaskResult]:
        chunks = [[str(i) for i in task_ids[s : s + EXPORT_CHUNK]] for s in range(0, len(task_ids), EXPORT_CHUNK)]

        def export(chunk: list[str]) -> list[dict[str, Any]]:
            def call() -> list[dict[str, Any]]:
                raw = b"".join(
                    self.client.projects.exports.download_sync(
                        project.id,
                        export_type="JSON",
                        download_all_tasks=True,
                        request_options={"additional_query_parameters": {"ids[]": chunk}},
                    )
                )
                loaded: list[dict[str, Any]] = json.loads(raw)
                return loaded

            tasks = self._call(f"export {len(chunk)} tasks of project {project.id}", call)
            wanted = {int(i) for i in chunk}
            # an id list the server ignored would return the whole project
            return [t for t in tasks if int(t["id"]) in wanted]

        # the server spends its time serializing tasks: a few chunks in parallel finish sooner
        with ThreadPoolExecutor(max_workers=EXPORT_WORKERS) as pool:
            exported = [task for tasks in pool.map(export, chunks) for task in tasks]
        return [self._task_result(task) for task in exported]

    def open_tasks(self, project: ProjectRef, batch_id: str | None = None, limit: int | None = None) -> list[OpenTask]:
        items = [
            _filter("total_annotations", "equal", "Number", 0),
            _filter("cancelled_annotations", "equal", "Number", 0),
        ]
        if batch_id is not None:
            items.insert(0, batch_filter(batch_id))
        out = []
        for task in self._iter_tasks(project.id, _query(*items), limit):
            data = task.data or {}
            if data.get(RECORD_KEY) is None:
                continue  # a task someone added by hand, not one of ours
            out.append(OpenTask(int(task.id), str(data[RECORD_KEY]), str(data.get(BATCH_KEY, ""))))
        return out

    def submit_labels(
        self, project: ProjectRef, labels: Mapping[int, str], *, annotator: str = BOT_MODEL_VERSION
    ) -> int:
        """Annotate as a simulated annotator: bot predictions, then Label Studio's predictions-to-annotations action.

        Two requests per call, whatever the number of tasks. The annotations belong to the token's
        user and point to the bot's predictions (model version `annotator`); give the bot a backend
        with its own user's token to see it as a separate annotator in the lineage.
        """
        if not labels:
            return 0
        predictions = [
            {"task": int(t), "model_version": annotator, "result": choices_result(lbl)} for t, lbl in labels.items()
        ]
        self._call(
            f"import {len(predictions)} simulated-annotator predictions into project {project.id}",
            lambda: self.client.projects.import_predictions(project.id, request=predictions),
            creates=True,
        )
        ids = [int(t) for t in labels]
        self._call(
            f"convert simulated-annotator predictions of {len(ids)} tasks to annotations in project {project.id}",
            lambda: self.client.actions.create(
                id="predictions_to_annotations",
                project=project.id,
                selected_items={"all": False, "included": ids},
                request_options={"additional_body_parameters": {"model_version": annotator}},
            ),
            creates=True,
        )
        return len(ids)

    def batch_url(self, project: ProjectRef, batch_id: str) -> str:
        """The project's Data Manager on a tab that shows only this batch (the tab is created once)."""
        views = self._call(f"list views of project {project.id}", lambda: self.client.views.list(project=project.id))
        for view in views:
            if (getattr(view, "data", None) or {}).get("title") == batch_id:
                return f"{project.url}/data?tab={view.id}"
        data: Any = {"title": batch_id, "filters": {"conjunction": "and", "items": [batch_filter(batch_id)]}}
        view = self._call(
            f"create a tab for batch {batch_id} in project {project.id}",
            lambda: self.client.views.create(project=project.id, data=data),
            creates=True,
        )
        return f"{project.url}/data?tab={view.id}"

    # --- helpers ----------------------------------------------------------------------------

    def _labels(self, project: ProjectRef) -> list[str]:
        current = self._call(f"read project {project.id}", lambda: self.client.projects.get(project.id))
        return _choices_in_config(current.label_config or "")

    def _annotator(self, user_id: Any) -> str:
        if isinstance(user_id, dict):
            return str(user_id.get("email") or user_id.get("username") or f"user-{user_id.get('id')}")
        if self._users is None:
            users = self._call("list users", self.client.users.list)
            self._users = {int(u.id): str(u.email or u.username or f"user-{u.id}") for u in users}
        try:
            return self._users.get(int(user_id), f"user-{user_id}")
        except (TypeError, ValueError):
            return f"user-{user_id}"

    def _task_result(self, task: Mapping[str, Any]) -> TaskResult:
        data = task.get("data") or {}
        annotations = tuple(
            AnnotationResult(
                annotation_id=int(a["id"]),
                annotator=self._annotator(a.get("completed_by")),
                labels=labels_of(a.get("result")),
                cancelled=bool(a.get("was_cancelled")),
                rejected=a.get("last_action") == "rejected" or a.get("review_result") == "rejected",
                from_prediction=a.get("parent_prediction") is not None,
            )
            for a in task.get("annotations") or []
        )
        return TaskResult(
            task_id=int(task["id"]),
            record_id=str(data.get(RECORD_KEY, "")),
            batch_id=str(data.get(BATCH_KEY, "")),
            annotations=annotations,
        )


def _choices_in_config(config: str) -> list[str]:
    """The Choice values of our Choices control in a label config."""
    from xml.etree.ElementTree import ParseError

    from defusedxml.ElementTree import fromstring  # the config comes back from a server

    try:
        root = fromstring(config)
    except ParseError as exc:
        raise BackendError(f"label config is not valid XML: {exc}") from exc
    for choices in root.iter("Choices"):
        if choices.get("name") == CHOICES_NAME:
            return [c.get("value", "") for c in choices.iter("Choice")]
    return []
