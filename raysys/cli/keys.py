"""``raysys keys``: API keys of the HTTP API (create, list, revoke)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from raysys.cli.common import (
    ConfigOption,
    JsonOption,
    emit,
    err_console,
    handle_errors,
    out_console,
    system,
    table,
)

keys_app = typer.Typer(help="API keys of the HTTP API: roles predict, feedback, admin.", no_args_is_help=True)
ROLE_HELP = "predict (/v1/predict, /v2/models/*), feedback (/v1/feedback) or admin (everything)."


@keys_app.command("create")
@handle_errors
def create(role: Annotated[str, typer.Option("--role", help=ROLE_HELP)],
           name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")] = "",
           config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Create a key; it is printed this once and stored only hashed."""
    from raysys.access import check_role

    check_role(role)  # a bad role fails before the config is read
    emit(system(config).keys.create(role, name), as_json, _render_created)


@keys_app.command("list")
@handle_errors
def list_keys(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every key: id, name, role, created, revoked (never the key itself)."""
    emit({"keys": system(config).keys.list()}, as_json, _render_list)


@keys_app.command("revoke")
@handle_errors
def revoke(ident: Annotated[str, typer.Argument(metavar="ID", help="The key's id (`raysys keys list`).")],
           config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Revoke a key: the serving app refuses it within serve.auth_refresh_s."""
    emit(system(config).keys.revoke(ident), as_json,
         lambda k: out_console.print(f"revoked key {k['id']} ({k['name']}, {k['role']})", highlight=False))


def _render_created(key: dict[str, Any]) -> None:
    out_console.print(f"created key {key['id']} ({key['name']}, role {key['role']}):", highlight=False)
    print(key["key"])
    err_console.print("this is the only time the key is shown; clients send it as "
                      "`Authorization: Bearer <key>`", highlight=False)


def _render_list(result: dict[str, Any]) -> None:
    rows = [[k["id"], k["name"], k["role"], k["created_at"][:19].replace("T", " "), k["created_by"],
             (k["revoked_at"] or "")[:19].replace("T", " ")] for k in result["keys"]]
    if not rows:
        out_console.print("no API keys (serve.auth: auto leaves the HTTP API open until one exists)")
        return
    out_console.print(table("API keys (UTC)", ["id", "name", "role", "created", "by", "revoked"], rows))
