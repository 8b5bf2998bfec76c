"""The edge fleet: simulated devices, the control plane on Kafka and fleet health.

Modules (import the one you need; this package imports nothing heavy):

- `messages`: wire formats of telemetry, heartbeats, error reports, control
  assignments (HMAC-signed) and device-state records.
- `topics`: `ensure_topics` (the six pipeline topics, device-state compacted, plus
  the simulator's ground-truth topic) and bounded readers of a topic window.
- `control`: publish assignments, read the device-state twin, count how many
  devices of a group report an assignment applied.
- `sensors`: class-conditional sensor data (the demo's predictive-maintenance
  profile and a generic one), drift transforms.
- `models`: `ModelProvider` (MLflow registry loader, built-in baseline rule model,
  fault injection), cached per version.
- `simulator`: `FleetSimulator` and `simulate()`, a vectorised loop that scales to
  10,000 devices on one core.
- `groundtruth`: the hidden true labels and `true_labels()` for simulated annotators.
- `health`: `fleet_status()`, per-group health and device alerts.
- `cli`: `main(argv)` for `edgeloop fleet ...`.
"""
