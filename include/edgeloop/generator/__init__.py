"""The pipeline generator: from a Kafka topic and a template to a validated pipeline spec.

It proposes a spec from what it can see (topics, sample records, edge groups), shows
it for review with every validation error at its field path, and writes an ordinary
spec file that an expert can read, review and keep in git. The spec is data: nothing
a user types is executed or written into a Python file.

Modules (this package imports nothing heavy; import the module you need):

- `templates`: the three use-case templates (predictive maintenance, image
  classification, anomaly detection) and their spec defaults.
- `inference`: record schema and field roles from sample messages.
- `presets`: rollout presets (cautious / standard / fast) and the waves they make.
- `render`: a wizard draft to a spec mapping, YAML rendering, validation with field
  paths, the DAG ids a spec creates, and the diff of an edit.
- `store`: spec files on disk: atomic writes, content versions, concurrent-edit checks.
- `discovery`: live Kafka topics, recent messages and edge groups of a topic prefix.
- `status`: last DAG runs, recent alerts and champion model versions of each pipeline.
- `app`: the FastAPI app the Airflow plugin mounts (page, wizard and REST API).
- `cli`: `spec_new(argv)` for `edgeloop spec new`.
"""
