"""`edgeloop annotate-bot`: the simulated annotator of the demo and tests (never runs unless asked).

A harness command: it feeds the annotation stage's bot (`edgeloop.annotation.bot`) the simulator's
hidden true labels (`edgeloop.simulator.groundtruth`)."""

from __future__ import annotations

import argparse
import json
import os
import time


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bot = sub.add_parser("annotate-bot", help="label open Label Studio tasks with the simulator's hidden true labels")
    bot.add_argument("--pipeline", required=True)
    bot.add_argument("--noise", type=float, default=0.02, help="share of labels flipped at random")
    bot.add_argument("--delay", type=float, default=0.0, help="seconds between labels")
    bot.add_argument("--batch-id", default=None)
    bot.add_argument("--max-tasks", type=int, default=None)
    bot.add_argument("--follow", action="store_true", help="keep labelling new tasks until interrupted")
    bot.add_argument("--interval", type=float, default=5.0, help="seconds between passes with --follow")
    bot.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeloop.annotation.bot import annotate_bot
    from edgeloop.annotation.label_studio import LabelStudioBackend, LabelStudioSettings
    from edgeloop.simulator.groundtruth import true_labels
    from edgeloop.spec import default_pipelines_dir, load_spec

    spec = load_spec(default_pipelines_dir() / f"{args.pipeline}.yaml")
    url, token = os.environ.get("EDGELOOP_LABEL_STUDIO_URL"), os.environ.get("EDGELOOP_LABEL_STUDIO_TOKEN")
    bootstrap = os.environ.get("EDGELOOP_KAFKA_BOOTSTRAP")
    if not (url and token and bootstrap):
        raise SystemExit("set EDGELOOP_LABEL_STUDIO_URL, EDGELOOP_LABEL_STUDIO_TOKEN and EDGELOOP_KAFKA_BOOTSTRAP")
    backend = LabelStudioBackend.connect(LabelStudioSettings(url=url, token=token))
    kafka = {"bootstrap.servers": bootstrap}
    while True:
        counts = annotate_bot(
            spec,
            backend,
            true_labels=lambda ids: true_labels(spec, kafka, ids),
            noise=args.noise,
            delay=args.delay,
            batch_id=args.batch_id,
            max_tasks=args.max_tasks,
            seed=int(time.time()),
        )
        print(json.dumps(counts), flush=True)
        if not args.follow:
            return 0
        time.sleep(args.interval)
