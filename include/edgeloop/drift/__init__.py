"""Drift detection per edge group, with Evidently's statistics and reports.

One module per concept; each is imported by the task that needs it (pandas and
Evidently are heavy, DAG files never import this package at parse time):

- `columns`: which record fields a drift check reads, from the spec's roles.
- `window`: the current window (time or record count) read from `raw/` Parquet with partition pruning.
- `sample`: bounded-memory stratified sampling and per-group counts while reading.
- `reference`: the reference sample (`champion_reference`: per group the champion's training rows, or the
  new normal of a group the champion was retrained for; before any model, a named raw window).
- `lineage`: the curated versions in the champion's training data and the raw windows their batches came from.
- `stats`: Evidently's drift statistics (tests, defaults, bins, smoothing) as numpy functions.
- `detect`: the verdicts for the fleet, each edge group and each model version, as Evidently's tests give them.
- `reports`: Evidently's HTML reports, drifted scopes before the alert, the others after it.
- `results`: the JSON summary and report keys under `reports/drift/<pipeline>/<run>/`.
- `alerts`: pure functions for alert messages and the open-alert state (duplicate suppression).
- `alert_state`: that state as one JSON object in S3, changed only with conditional puts.
"""
