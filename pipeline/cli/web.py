"""`catalogue web`: serve the moderators' workbench."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.db import get_engine
    from pipeline.web.app import create_app
    from pipeline.web.users import list_people

    settings = load_settings()
    host, port = args.host or settings.web_host, args.port or settings.web_port
    people = list_people(engine=get_engine(settings.database_url))
    if not any(p.role == "admin" and not p.disabled for p in people):
        say("nobody manages people yet: `catalogue users add NAME --role admin` first")
    say(f"workbench at http://{host}:{port}/ (Ctrl-C stops it); people: `catalogue users add`")
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="warning",
        proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips,
    )  # fmt: skip
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    web = add(
        "web",
        cmd_web,
        "Serve the moderators' workbench: the review queue as a grid worked with the keyboard, "
        "bulk relabelling with dry run and undo, each picture's history, the jobs, the "
        "catalogue and search by picture; every label is recorded as the signed-in person.",
    )
    web.add_argument("--host", help="address to listen on (CATALOGUE_WEB_HOST, 127.0.0.1)")
    web.add_argument("--port", type=int, help="port (CATALOGUE_WEB_PORT, 8090)")
    web.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="the TLS proxy whose X-Forwarded-Proto is trusted (default 127.0.0.1)",
    )
