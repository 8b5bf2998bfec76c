"""The wire contract between the cloud (the Airflow bundle) and the edge (the agent).

Both sides import this package; it imports neither side. It holds what crosses the
wire: control assignments and device-state records (`messages`), the ONNX model
artifact a device runs (`artifact`), and bounded JSON decoding for every message
that comes from a device or the network (`safejson`). Only the standard library and
nothing heavier than numpy may be imported here: the agent runs on small devices.
"""
