"""The routes of the plugin app, in groups: `pages`, `reading`, `rollouts`, `wizard`, `writing`.

Each group is an `APIRouter` built from one `context.RouteContext` (settings, access, sources);
`edgeloop.generator.app.create_app` includes them. Every route needs the right to read DAGs;
the writing routes also an Airflow admin who may edit the pipeline's DAGs.
"""
