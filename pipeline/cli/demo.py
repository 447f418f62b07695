"""`catalogue demo`: the product end to end (the flow is `pipeline.demo`)."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.args import AddCommand, UsageError
from pipeline.cli.output import EXIT_FAILED, EXIT_OK, say
from pipeline.config import Settings
from pipeline.demo import DEMO_SIZE


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import DemoOptions, run_demo
    from pipeline.train.progress import ProgressPrinter

    if not 0 < args.labelled_share < 1:
        raise UsageError("--labelled-share is a fraction between 0 and 1, e.g. 0.7")
    options = DemoOptions(
        size=args.size,
        labelled_share=args.labelled_share,
        network=args.network,
        epochs=args.epochs,
        airflow=not args.no_airflow,
    )
    progress = ProgressPrinter(sys.stdout)
    try:
        finished = run_demo(Settings.from_env(), options, say=say, training_progress=progress)
    finally:
        progress.close()
    return EXIT_OK if finished else EXIT_FAILED


def add_commands(add: AddCommand) -> None:
    demo = add(
        "demo",
        cmd_demo,
        "Run the product end to end on embedded defaults: start the stack, generate sample "
        "business accounts from the fashion product photos, import them and their colour and "
        "category labels for part of them, retrain, promote, predict every picture, and report "
        "(with the accuracy on the pictures whose labels were kept aside).",
        tensorflow=True,
    )
    demo.add_argument("--no-airflow", action="store_true", help="skip Airflow")
    demo.add_argument(
        "--size", type=int, default=DEMO_SIZE, help=f"product photos to use (default {DEMO_SIZE:,})"
    )
    demo.add_argument(
        "--labelled-share",
        type=float,
        default=0.7,
        help="share of the posts the moderators label (default 0.7)",
    )
    demo.add_argument(
        "--network",
        help="the network to train (default: CATALOGUE_TRAIN_NETWORK, "
        f"{Settings.model_fields['train_network'].default} unless configured)",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        help="training epochs (default: CATALOGUE_TRAIN_EPOCHS, "
        f"{Settings.model_fields['train_epochs'].default} unless configured)",
    )
