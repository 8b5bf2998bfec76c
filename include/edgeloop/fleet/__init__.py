"""The edge fleet's production side: the control plane on Kafka, the device registry and fleet health.

Modules (import the one you need; this package imports nothing heavy):

- `topics`: `ensure_topics` (the six pipeline topics, device-state compacted, plus
  the simulator's ground-truth topic) and bounded readers of a topic window.
- `control`: publish assignments, read the device-state twin, count how many
  devices of a group report an assignment applied.
- `registry`: the device registry on Kafka (enrolled devices and their public keys).
- `agents`: agent configs from a spec, and a device's enrolment; `agent_cli`: `edgeloop agent ...`.
- `health`: `fleet_status()`, per-group health and device alerts; `tasks`: the fleet health stage.
- `waiting`: the deferrable wait until a pushed config is applied.
- `cli`: `edgeloop fleet status|push|health|ensure-topics`.

The simulator harness is `edgeloop.simulator` (above the stages: nothing here imports it), the
wire formats live in `edgeloop.contract`, the device's own code in `edgeloop.edge`.
"""
