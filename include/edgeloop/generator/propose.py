"""A first draft from what the cluster shows: the topic, its sample records, the fleet's groups.

Pure: the caller reads Kafka (see `discovery`) and hands the results over, so the page,
the REST API and `edgeloop spec new` propose exactly the same draft for the same data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeloop.generator.discovery import SOURCE_KINDS, TopicInfo, split_topic
from edgeloop.generator.inference import InferredSchema, SampleMessage, infer_schema
from edgeloop.generator.presets import PRESETS, GroupChoice, PresetId, group_name_from_id, pick_canary
from edgeloop.generator.render import Draft, DraftField, DraftGroup
from edgeloop.generator.templates import Template
from edgeloop.spec import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


class NotASourceTopic(ValueError):
    """A topic a pipeline cannot be generated from; the message says which names work."""


@dataclass(frozen=True)
class GroupCandidate:
    """An edge group as seen on the cluster, and the spec group name proposed for it."""

    id: str
    name: str | None
    devices: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "devices": self.devices, "source": self.source}


@dataclass
class Proposal:
    topic: str
    prefix: str
    siblings: list[str]
    inference: InferredSchema
    groups: list[GroupCandidate]
    groups_source: str
    draft: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "prefix": self.prefix,
            "siblings": self.siblings,
            "inference": self.inference.to_dict(),
            "groups": [g.to_dict() for g in self.groups],
            "groups_source": self.groups_source,
            "draft": self.draft,
            "notes": self.notes,
        }


def source_prefix(topic: str) -> str:
    """The pipeline topic prefix of a telemetry topic; NotASourceTopic for any other name."""
    prefix, kind = split_topic(topic)
    if prefix is None or kind != "telemetry":
        raise NotASourceTopic(
            f"topic '{topic}' is not named <prefix>.telemetry: an edgeloop pipeline reads <prefix>.telemetry "
            "(and optionally <prefix>.health and <prefix>.errors); pick a telemetry topic"
        )
    return prefix


def suggest_name(prefix: str, taken: Collection[str]) -> str:
    """A free pipeline name from a topic prefix (lower case, '_' for anything else)."""
    base = re.sub(r"[^a-z0-9_]+", "_", prefix.lower()).strip("_")
    if not base or not base[0].isalpha():
        base = f"p_{base}".rstrip("_")
    base = base[:36].rstrip("_")
    if len(base) < 2:
        base = f"{base}_pipeline"
    name = base
    n = 2
    while name in taken or not _NAME.match(name):
        name = f"{base[:36]}_{n}"
        n += 1
    return name


def group_candidates(
    state_groups: Mapping[str, int] | None, inferred: InferredSchema
) -> tuple[list[GroupCandidate], str]:
    """Groups from the fleet state topic when it has any, else from the sampled records."""
    if state_groups:
        found, source = state_groups, "device-state"
    elif inferred.groups:
        found, source = inferred.groups, "samples"
    else:
        return [], "none"
    return [GroupCandidate(g, group_name_from_id(g), n, source) for g, n in found.items()], source


def propose(
    topic: TopicInfo,
    all_topics: Sequence[TopicInfo],
    samples: Sequence[SampleMessage],
    state_groups: Mapping[str, int] | None,
    template: Template,
    taken_names: Collection[str],
    *,
    bucket: str = "edgeloop",
    preset: PresetId = "standard",
) -> Proposal:
    """The wizard's starting point for a telemetry topic (the user corrects what is wrong)."""
    prefix = source_prefix(topic.name)
    siblings = sorted(
        t.kind for t in all_topics if t.prefix == prefix and t.kind in SOURCE_KINDS and t.kind != "telemetry"
    )
    inferred = infer_schema(samples, template)
    groups, groups_source = group_candidates(state_groups, inferred)
    notes: list[str] = []
    if not samples:
        notes.append(f"topic '{topic.name}' has no messages yet: the schema is the template's example, not data")
        inferred = infer_schema([_example(template, i) for i in range(5)], template)
    bad = [g.id for g in groups if g.name is None]
    if bad:
        notes.append(
            f"group ids {bad} cannot be spec group names (lower case letters, digits and '-', starting with a "
            "letter): left out; devices must report a group id equal to a group name of the spec"
        )
    chosen = [GroupChoice(g.name, g.devices) for g in groups if g.name is not None]
    chosen = list({g.name: g for g in chosen}.values())
    draft = Draft(
        name=suggest_name(prefix, taken_names),
        template=template.id,
        topic_prefix=prefix,
        ingest=["telemetry"],
        partitions=topic.partitions,
        schema_=[DraftField(name=f.name, type=f.type, role=f.role, nullable=f.nullable) for f in inferred.fields],
        labels=inferred.labels or list(template.labels),
        groups=[DraftGroup(name=g.name, devices=g.devices) for g in chosen] or [DraftGroup(name="default")],
        preset=preset,
        canary=pick_canary(chosen),
        bucket=bucket,
    )
    if not chosen:
        notes.append("no edge groups found on the cluster: enter the group names your devices use")
    if PRESETS[preset].one_wave_per_group and len(chosen) > 5:
        notes.append(f"{len(chosen)} groups, one wave each: a cautious rollout takes a while")
    return Proposal(
        topic=topic.name,
        prefix=prefix,
        siblings=siblings,
        inference=inferred,
        groups=groups,
        groups_source=groups_source,
        draft=draft.model_dump(by_alias=True),
        notes=notes,
    )


def _example(template: Template, index: int) -> SampleMessage:
    return SampleMessage(0, index, 0, None, json.dumps(template.example_record(index)).encode())
