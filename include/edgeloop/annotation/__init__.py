"""Annotation stage: select the samples worth labelling, open a batch, wait, export a curated version.

The `<pipeline>__annotate` DAG calls, in order (each returns a small JSON-able dict):

- `selection.selection_request(...)` + `selection.select_batch(spec, s3, request)`
  (raises `selection.EmptySelection` -> skip),
- `batch.open_batch(spec, s3, backend, batch_id)`,
- `sensor.AnnotationBatchSensor.for_spec(spec, batch=...)` (deferrable; runs `trigger.BatchCompletionTrigger`),
- `export.export_dataset(spec, s3, backend, batch_id, partial=...)` (raises `export.NothingToExport` -> skip).

Backends implement `backend.AnnotationBackend`; `label_studio.LabelStudioBackend` is the one
shipped. `bot.annotate_bot` is the simulated annotator of the demo and tests.
Submodules import their heavy dependencies lazily; import them directly.
"""
