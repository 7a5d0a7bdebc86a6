"""``facegnet gallery migrate`` (a gallery between a directory and PostgreSQL) and ``facegnet gallery token``
(named tokens with a role, for the servers of a PostgreSQL gallery)."""
from __future__ import annotations

import argparse
import sys
import time

from facegnet.cli.common import add_database_option, database_of, print_json
from facegnet.errors import FacegnetError


def register_actions(actions) -> None:
    """Add ``migrate`` and ``token`` to the ``facegnet gallery`` actions."""
    migrate = actions.add_parser(
        "migrate", help="copy a gallery into PostgreSQL (or out of it), verified",
        description="Copy the gallery (--gallery DIR or --database URL) to --to (a PostgreSQL URL or a directory: "
        "the other kind): people, templates, embeddings, the embedding procedure and stored photos, in one "
        "transaction, then read back and compared (counts and every embedding). The target must be empty.")
    migrate.add_argument("--to", required=True, metavar="URL_OR_DIR", help="where to copy the gallery")
    migrate.add_argument("--gallery", default=None, metavar="DIR", help="the gallery directory to copy")
    add_database_option(migrate)
    migrate.set_defaults(func=run_migrate)

    token = actions.add_parser(
        "token", help="named API tokens of a PostgreSQL gallery (add, list, revoke)",
        description="Named tokens every server of a PostgreSQL gallery accepts. Role 'enroll': everything; role "
        "'identify': identify, verify and the camera only. A revoked token stops working on every server within "
        "a second.")
    token_actions = token.add_subparsers(dest="token_action", metavar="ACTION")
    add = token_actions.add_parser("add", help="make a token (printed once)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", choices=("enroll", "identify"), default="identify",
                     help="what the token may do (default: identify)")
    listing = token_actions.add_parser("list", help="the tokens, their roles, and which are revoked")
    listing.add_argument("--json", action="store_true")
    revoke = token_actions.add_parser("revoke", help="revoke a token")
    revoke.add_argument("name", metavar="NAME")
    for sub in (add, listing, revoke):
        add_database_option(sub)
        sub.set_defaults(func=run_token)
    token.set_defaults(func=lambda _args: (token.print_help(), 2)[1])


def run_migrate(args: argparse.Namespace) -> int:
    from facegnet.gallery import default_gallery_dir
    from facegnet.gallery.migrate import migrate

    source = database_of(args) or args.gallery or str(default_gallery_dir())
    report = migrate(source, args.to)
    print(report.summary())
    return 0


def run_token(args: argparse.Namespace) -> int:
    from facegnet.gallery.pg_store import PgStore
    from facegnet.gallery.pg_tokens import TokenTable

    database = database_of(args)
    if database is None:
        raise FacegnetError("named tokens live in a PostgreSQL gallery: give --database URL (or FACEGNET_DATABASE)")
    PgStore.open(database).close()  # one line when there is no gallery there
    table = TokenTable(database)
    try:
        if args.token_action == "add":
            token = table.add(args.name, args.role)
            print(token)
            print(f"facegnet: token {args.name!r} ({args.role}) made; it is shown only now", file=sys.stderr)
        elif args.token_action == "list":
            tokens = table.list()
            if args.json:
                print_json({"tokens": tokens})
            for item in [] if args.json else tokens:
                state = "revoked " + time.strftime("%Y-%m-%d %H:%M", time.localtime(item["revoked"])) \
                    if item["revoked"] else "live"
                print(f"{item['name']}\t{item['role']}\t{state}")
        elif args.token_action == "revoke":
            table.revoke(args.name)
            print(f"revoked token {args.name!r}")
    finally:
        table.close()
    return 0


__all__ = ["register_actions", "run_migrate", "run_token"]
