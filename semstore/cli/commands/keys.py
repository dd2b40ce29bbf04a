"""API keys of the HTTP server: create (the secret is printed once), list, revoke."""

from typing import Annotated

import typer

from semstore.cli.params import DataDirOption, DbOption, JsonOption, build_settings, open_database
from semstore.cli.render import echo_json, print_table

app = typer.Typer(
    name="keys",
    help="Manage the HTTP server's API keys (stored hashed; the secret is shown once, at creation).",
    no_args_is_help=True,
)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the key (letters, digits, '.', '_', '-').")],
    scope: Annotated[
        str, typer.Option("--scope", help="read: search and read only; read-write: also change collections.")
    ] = "read",
    db: DbOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a key and print its secret (store it now: it cannot be shown again)."""
    from semstore import apikeys
    from semstore.cli.errors import CliError

    if scope not in apikeys.SCOPES:
        raise CliError(f"--scope must be one of {', '.join(apikeys.SCOPES)}, got {scope!r}")
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings) as database:
        info, secret = apikeys.create_api_key(database.sessions, name, scope)
    if json_output:
        echo_json({"name": info.name, "scope": info.scope, "key": secret})
        return
    typer.echo(secret)
    typer.echo(f"created {info.scope} key {info.name!r}; send it as 'Authorization: Bearer <key>' (shown only once)", err=True)


@app.command("list")
def list_keys(db: DbOption = None, data_dir: DataDirOption = None, json_output: JsonOption = False) -> None:
    """List the keys (names, scopes, dates; never the secrets)."""
    from semstore import apikeys

    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        keys = apikeys.list_api_keys(database.sessions)
    if json_output:
        for key in keys:
            echo_json(
                {
                    "name": key.name,
                    "scope": key.scope,
                    "created_at": _date(key.created_at),
                    "last_used_at": _date(key.last_used_at),
                    "revoked_at": _date(key.revoked_at),
                }
            )
        return
    if not keys:
        typer.echo("no API keys (create one with `semstore keys create NAME --scope read`)")
        return
    rows = [
        (key.name, key.scope, _date(key.created_at), _date(key.last_used_at) or "never", "revoked" if key.revoked else "active")
        for key in keys
    ]
    print_table(None, ["name", "scope", "created", "last used", "state"], rows)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key to revoke.")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    from semstore import apikeys

    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        info = apikeys.revoke_api_key(database.sessions, name)
    typer.echo(f"revoked key {info.name!r}")


def _date(value: object) -> str | None:
    return None if value is None else str(value)
