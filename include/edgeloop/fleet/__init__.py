"""The edge fleet: the simulator harness around agent code, the control plane on Kafka and fleet health.

Modules (import the one you need; this package imports nothing heavy):

- `topics`: `ensure_topics` (the six pipeline topics, device-state compacted, plus
  the simulator's ground-truth topic) and bounded readers of a topic window.
- `control`: publish assignments, read the device-state twin, count how many
  devices of a group report an assignment applied.
- `sensors`: class-conditional sensor data (the demo's predictive-maintenance
  profile and a generic one), drift transforms.
- `models`: `ModelProvider` (ONNX artifacts named by signed assignments, loaded with
  the agent's code; the built-in baseline rule model; fault injection), cached per version.
- `baseline`: the baseline rule model as an ONNX artifact (version "0").
- `agents`: agent configs and Kubernetes objects from a spec (`edgeloop agent ...`).
- `simulator`: `FleetSimulator` and `simulate()`: vectorised sensors and a simulated
  network around one `edgeloop.edge.device.DeviceCore` per device, 10,000 devices
  on a fraction of a core.
- `groundtruth`: the hidden true labels and `true_labels()` for simulated annotators.
- `health`: `fleet_status()`, per-group health and device alerts.
- `cli`: `main(argv)` for `edgeloop fleet ...`.

The wire formats live in `edgeloop.contract`, the device's own code in `edgeloop.edge`.
"""
