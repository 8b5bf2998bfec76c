"""DAG parse time of the dags folder, per pipeline, the way the dag-processor parses it.

The dag-processor forks one child per DAG file from a parent that has Airflow loaded;
each child imports the file from scratch. This benchmark does the same (fork per file,
Airflow pre-imported in the parent) for the demo spec alone and for 100 generated copies
of it, and compares with a minimal hand-written DAG file parsed the same way.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DEMO = REPO / "include" / "pipelines" / "factory_maintenance.yaml"
ROUNDS = 5

BASELINE_DAG = '''"""A minimal hand-written Airflow DAG: one task, no factory."""
from datetime import datetime
from airflow.sdk import DAG, task

with DAG(dag_id="baseline", schedule=None, start_date=datetime(2026, 1, 1), tags=["baseline"]) as dag:
    @task
    def hello() -> str:
        return "hello"
    hello()
'''


def parse_in_child(path: Path) -> tuple[float, int]:
    """Fork, parse one file with a DagBag in the child, return (seconds, dag count)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        from airflow.dag_processing.dagbag import DagBag

        started = time.perf_counter()
        bag = DagBag(str(path))
        elapsed = time.perf_counter() - started
        errors = len(bag.import_errors)
        os.write(write_fd, f"{elapsed} {len(bag.dag_ids) if not errors else -1}".encode())
        os._exit(0)
    os.close(write_fd)
    data = os.read(read_fd, 100).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    seconds, count = data.split()
    return float(seconds), int(count)


def folder_time(files: list[Path]) -> tuple[float, int]:
    """Median over rounds of the summed per-file parse time, and the DAG count."""
    totals = []
    count = 0
    for _ in range(ROUNDS):
        total = 0.0
        count = 0
        for path in files:
            seconds, dags = parse_in_child(path)
            if dags < 0:
                raise SystemExit(f"import errors in {path}")
            total += seconds
            count += dags
        totals.append(total)
    return statistics.median(totals), count


def main() -> None:
    import logging

    logging.disable(logging.CRITICAL)
    import airflow.sdk  # noqa: F401 - the dag-processor parent has Airflow loaded
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401

    dag_files = sorted(DAGS.glob("*.py"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline_dag.py"
        baseline.write_text(BASELINE_DAG)
        base_seconds, _ = folder_time([baseline])
        rows.append(("hand-written 1-task DAG file (baseline)", 1, 1, base_seconds, base_seconds))

        one = Path(tmp) / "one"
        one.mkdir()
        (one / DEMO.name).write_text(DEMO.read_text())
        os.environ["EDGELOOP_PIPELINES_DIR"] = str(one)
        seconds, dags = folder_time(dag_files)
        rows.append(("edgeloop dags/, demo spec", 1, dags, seconds, seconds))

        many = Path(tmp) / "many"
        many.mkdir()
        data = yaml.safe_load(DEMO.read_text())
        for i in range(100):
            name = f"pipeline_{i:03d}"
            copy = data | {"name": name, "topics": data["topics"] | {"prefix": name}}
            (many / f"{name}.yaml").write_text(yaml.safe_dump(copy))
        os.environ["EDGELOOP_PIPELINES_DIR"] = str(many)
        seconds, dags = folder_time(dag_files)
        rows.append(("edgeloop dags/, 100 generated specs", 100, dags, seconds, seconds / 100))

    print(f"\nDAG parse time, fork per file like the dag-processor, median of {ROUNDS} rounds")
    print(f"{'case':<42} {'pipelines':>9} {'DAGs':>6} {'folder s':>9} {'per pipeline s':>15} {'vs baseline':>12}")
    for case, pipelines, dags, seconds, per_pipeline in rows:
        print(
            f"{case:<42} {pipelines:>9} {dags:>6} {seconds:>9.3f} {per_pipeline:>15.3f} "
            f"{per_pipeline / base_seconds:>11.1f}x"
        )
    target_ok = rows[1][4] < 0.5
    print(f"\ntarget: < 0.5 s per pipeline -> {'met' if target_ok else 'NOT met'} ({rows[1][4]:.3f} s)")
    sys.exit(0 if target_ok else 1)


if __name__ == "__main__":
    main()
