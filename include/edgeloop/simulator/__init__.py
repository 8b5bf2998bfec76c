"""The fleet simulator: a test and demo harness around real agent code, above every stage.

Simulated sensors, cameras and networks around one `edgeloop.edge.device.DeviceCore` per
device, never a second implementation of a device. Stages never import this package (a unit
test of the import graph checks it); the demo, the `edgeloop` command, the local stack, tests
and benchmarks do.

Modules (import the one you need; this package imports nothing heavy):

- `fleet`: `FleetSimulator` and `simulate()`: vectorised sensors and a simulated network
  around the device cores, 10,000 devices on a fraction of a core.
- `cameras`: the camera rig of a camera pipeline (frames from `edgeloop.vision.frames`).
- `models`: `ModelProvider` (ONNX artifacts named by signed assignments, loaded with
  the agent's code; the built-in baseline rule model; fault injection), cached per version.
- `baseline`: the baseline rule model as an ONNX artifact (version "0"), and a camera pipeline's.
- `groundtruth`: the hidden true labels and `true_labels()` for simulated annotators.
- `annotate_bot`: `edgeloop annotate-bot`, the annotation stage's bot fed with those labels.
- `replay`: recorded telemetry replayed through the agent's window profilers.
- `cli`: `edgeloop fleet simulate` (assembled with the control plane's commands by `edgeloop.cli`).

The sensor model (machine states, readings, drift injections) is `edgeloop.training.sensors`:
the seed training set is drawn from it too.
"""
