"""The ``gtcorrect`` console script: run the service, a worker, migrations, admin tasks and the engine.

``gtcorrect serve`` is the embedded mode: with no configuration it keeps everything under
``.gtcorrect/`` (SQLite, local objects, a filesystem Celery broker), starts one worker subprocess
running the same task code as production, and serves the API in the foreground.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import AppError
from app.supervisor import WorkerSupervisor

if TYPE_CHECKING:
    from app.db.models import ApiKey
    from app.settings import Settings
# The database, settings and engine modules are imported inside the commands that use them, so that
# `gtcorrect --help` and the client commands start in well under a second.

LOCAL_PROJECT = "local"
API_KEY_FILE = "api_key"
WORKER_STOP_TIMEOUT_S = 20.0


def worker_command(pool: str, concurrency: int, queues: str = "train", loglevel: str = "INFO") -> list[str]:
    """The Celery worker command line; ``serve`` and the tests start exactly this."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        f"--pool={pool}",
        "-c",
        str(concurrency),
        f"--loglevel={loglevel}",
        # One worker per queue here: gossip, mingle and remote-control heartbeats only add broker traffic.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def _migrate(settings: Settings) -> None:
    from app.db.session import upgrade

    upgrade(settings.resolved_database_url())


def _write_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start, so the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)


def ensure_local_project(settings: Settings) -> tuple[str | None, Path]:
    """Create project "local" with a key on first start; return (new key or None, key file path).

    A new key is also issued when the project exists but its key file was deleted.
    """
    from sqlalchemy import select

    from app.db.models import Project
    from app.db.session import make_engine, make_session_factory, session_scope
    from app.services.projects import create_project, issue_key

    key_path = settings.data_dir / API_KEY_FILE
    engine = make_engine(settings.resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            project = session.scalar(select(Project).where(Project.name == LOCAL_PROJECT))
            if project is not None and key_path.is_file():
                return None, key_path
            if project is None:
                _, key = create_project(session, LOCAL_PROJECT)
            else:
                key = issue_key(session, project, name="serve")
            _write_key(key_path, key)
            return key, key_path
    finally:
        engine.dispose()


class _StopServing(Exception):
    """SIGINT or SIGTERM arrived: leave the server loop and stop the worker."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _StopServing


def _resend_unfinished(settings: Settings) -> int:
    from app.db.session import make_engine, make_session_factory
    from worker.celery_app import celery_app
    from worker.recover import resend_unfinished

    engine = make_engine(settings.resolved_database_url())
    try:
        return resend_unfinished(celery_app, make_session_factory(engine), settings.heartbeat_stale_s)
    finally:
        engine.dispose()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.settings import get_settings
    from gtcorrect.client import save_key

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings)
    key, key_path = ensure_local_project(settings)
    if key is not None:
        print(f"Created project {LOCAL_PROJECT!r}. API key (shown once, also saved to {key_path}):\n  {key}")
    else:
        print(f"Project {LOCAL_PROJECT!r}: the API key is in {key_path}")
    # `gtcorrect client` finds it from any folder: the per-user key file, under this server's URL.
    url = f"http://{args.host}:{args.port}"
    print(f"The client will use it for {url}: saved in {save_key(url, key_path.read_text().strip())}")
    resent = _resend_unfinished(settings)
    if resent:
        print(f"Re-queued {resent} unfinished job(s) from the previous run.")
    sys.stdout.flush()
    # uvicorn re-raises the signal that stopped it after restoring these handlers; ours turn it into an
    # exception, so the worker below is always stopped (the default SIGTERM action would orphan it).
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Restarted whenever it dies (killed for memory, a crash); /readyz and /metrics report it.
    worker = WorkerSupervisor(worker_command("solo", 1), stop_timeout_s=WORKER_STOP_TIMEOUT_S).start()
    try:
        # JSON logs: uvicorn keeps the handlers create_app installed instead of its own.
        log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
        app = create_app(settings)
        app.state.worker_supervisor = worker
        uvicorn.run(app, host=args.host, port=args.port, log_config=log_config)
    except _StopServing:
        pass
    finally:
        worker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from worker.celery_app import celery_app

    argv = worker_command("prefork", args.concurrency, args.queues, args.loglevel)[5:]
    celery_app.worker_main(argv=argv)
    return 0


def _migrate_cmd(_args: argparse.Namespace) -> int:
    from app.settings import get_settings

    settings = get_settings()
    _migrate(settings)
    print(f"database at {settings.safe_database_url()} is at the latest schema")
    return 0


def _create_project(args: argparse.Namespace) -> int:
    from app.db.session import make_engine, make_session_factory, session_scope
    from app.services.projects import create_project
    from app.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            project, key = create_project(session, args.name, by=_operator())
    finally:
        engine.dispose()
    print(f"project {project.name!r} ({project.id}); API key (shown once):\n{key}")
    return 0


def _operator() -> str:
    """Who runs the CLI, for the key audit: the login name of this shell."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _key_line(row: ApiKey) -> str:
    when = "%Y-%m-%d %H:%M"
    line = f"{row.prefix}  {row.project.name:<20} {row.name:<16} created {row.created_at:{when}} by "
    line += row.created_by or "?"
    if row.revoked_at is None:
        return line + "  active"
    return (
        line
        + f"  revoked {row.revoked_at:{when}} by {row.revoked_by}"
        + (f" ({row.revoke_note})" if row.revoke_note else "")
    )


def _keys(args: argparse.Namespace) -> int:
    """``gtcorrect keys create|list|revoke``: an operator's view of every project's keys."""
    from app.db.session import make_engine, make_session_factory, session_scope
    from app.services import keys
    from app.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            if args.keys_command == "create":
                owner = keys.project_by_name(session, args.project)
                row, plaintext = keys.create_key(session, owner, name=args.name, by=args.by or _operator())
                print(f"key {row.prefix} ({row.name}) for project {owner.name!r}; shown once:\n{plaintext}")
            elif args.keys_command == "revoke":
                row = keys.revoke_key(
                    session, keys.find_key(session, args.key), by=args.by or _operator(), note=args.note
                )
                print(_key_line(row))
            else:
                project = keys.project_by_name(session, args.project) if args.project else None
                for row in keys.list_keys(session, project):
                    print(_key_line(row))
    except AppError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gtcorrect.cli import add_commands
    from gtcorrect.client_cli import add_client_commands

    parser = argparse.ArgumentParser(prog="gtcorrect", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run API + one embedded worker (zero configuration)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run a production Celery worker (prefork, one job at a time)")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--queues", default="train")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=_worker)
    sub.add_parser("migrate", help="upgrade the database to the latest schema").set_defaults(
        func=_migrate_cmd
    )
    admin = sub.add_parser("admin", help="administration").add_subparsers(dest="admin_command", required=True)
    create = admin.add_parser("create-project", help="create a project and print its API key")
    create.add_argument("name")
    create.set_defaults(func=_create_project)
    keys = sub.add_parser("keys", help="issue, list and revoke API keys (recorded with who and when)")
    verbs = keys.add_subparsers(dest="keys_command", required=True)
    made = verbs.add_parser("create", help="issue another key for a project and print it (shown once)")
    made.add_argument("--project", required=True, help="the project's name")
    made.add_argument("--name", default="default", help="what the key is for")
    made.add_argument("--by", help="who issues it (default: cli:<your login>)")
    listed = verbs.add_parser("list", help="every key with who issued and revoked it (never a key itself)")
    listed.add_argument("--project", help="only this project's keys")
    revoked = verbs.add_parser("revoke", help="revoke a key: it stops working, its browser sessions end")
    revoked.add_argument("key", help="the key's prefix (as `list` shows it) or id")
    revoked.add_argument("--note", default="", help="why, for whoever reads the list later")
    revoked.add_argument("--by", help="who revokes it (default: cli:<your login>)")
    for verb in (made, listed, revoked):
        verb.set_defaults(func=_keys)
    add_commands(sub)
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gtcorrect``; returns the exit status (2 for bad input or configuration)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (AppError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
