"""The edge agent: the program that runs on a device (`edgeloop-agent --config agent.yaml`).

It imports only `edgeloop.contract`, the standard library, numpy, onnxruntime and
confluent-kafka: never Airflow, MLflow, pandas or scikit-learn (a test checks it).

- `config`: one config file, validated at start, errors name the field;
- `runtime`: ONNX models in onnxruntime, one shared session per artifact digest, self-test;
- `fetch`: download an artifact with size and digest checked before anything loads it;
- `store`: the models on disk, swapped atomically, the previous one kept for local rollback;
- `outbox`: the disk-backed store-and-forward queue (SQLite, WAL), bounded, counting drops;
- `device`: one device's logic (assignments, telemetry, heartbeats, twin), free of I/O;
- `agent`: the process: Kafka in and out, sensor source, health and metrics over HTTP.
"""
