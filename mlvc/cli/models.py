"""``mlvc models``: register, alias, list, show, predict with and serve models.

A thin shell over ``mlvc.models`` (docs/models.md); every command makes one library call.
The library opens the repository itself when a URI needs one (``models:/``, ``run:``).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click

from ..core.ids import short
from ..core.typenames import type_name
from ..render.text import aligned, echo
from ._common import emit, json_option, open_repo

TRUST_HELP = (
    "Allow unpickling a model that does not come from this repository (a folder, an MLflow "
    "model): pickles run code, so only for a source you trust. Also MLVC_TRUST_PICKLE=1."
)


def _when(seconds) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


@click.group()
def models() -> None:
    """Models: register versions, move aliases, list, show, predict and serve.

    \b
    Model URIs: run:RUN/models/NAME, models:/NAME/VERSION, models:/NAME@ALIAS, or a folder.
    Example session:
      mlvc models register iris run:HEAD/models/clf
      mlvc models alias iris champion 1
      mlvc models serve models:/iris@champion --port 5001
    """


@models.command()
@click.argument("name")
@click.argument("uri")
@click.option(
    "--trust",
    is_flag=True,
    help="Vouch for a model from a folder: its version's pickles then load without --trust.",
)
def register(name: str, uri: str, trust: bool) -> None:
    """Register the model at URI as the next version of NAME.

    Example: mlvc models register iris run:HEAD/models/clf
    """
    from ..models import api

    r = open_repo()
    version = api.register(name, uri, repo=r, trust=trust)
    info = api.get(name, version, repo=r)
    echo(f"registered {name} version {version} [{short(info.model_id)}] from {info.source}")


@models.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("-d", "--delete", is_flag=True, help="Remove the alias.")
def alias(name: str, alias: str, version: str | None, delete: bool) -> None:
    """Point ALIAS of model NAME at VERSION (moving it), or remove it with --delete.

    Every move is logged with who and when (`mlvc models show NAME`).
    Example: mlvc models alias iris champion 3
    """
    from ..errors import UsageError
    from ..models import api

    if delete:
        old = api.delete_alias(name, alias, repo=open_repo())
        echo(f"deleted {name}@{alias} (was version {old})")
        return
    if version is None:
        raise UsageError("give the VERSION the alias should point at, or --delete")
    info = api.set_alias(name, alias, version, repo=open_repo())
    echo(f"{name}@{alias} -> version {info.version} [{short(info.model_id)}]")


@models.command("list")
@json_option("the models")
def list_() -> None:
    """List registered models with their latest version and aliases.

    Example: mlvc models list
    """
    from ..models import api

    emit(api.list_models(repo=open_repo()), _echo_models)


def _echo_models(found: list[dict]) -> None:
    if not found:
        echo("no registered models: add one with `mlvc models register NAME URI`")
        return
    rows = [
        [
            m["name"],
            m["versions"],
            m["latest"],
            ", ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items())),
            _when(m["registered_at"]),
        ]
        for m in found
    ]
    echo(aligned(["model", "versions", "latest", "aliases", "last registered"], rows))


@models.command()
@click.argument("target")
@json_option("the model")
def show(target: str) -> None:
    """Show a model: NAME (its latest version), NAME/VERSION, NAME@ALIAS, or any model URI.

    Example: mlvc models show iris@champion
    """
    from ..models import api

    emit(api.describe(target), _echo_model)


def _echo_model(d: dict) -> None:
    v = d["version"]
    if v:
        echo(f"model {v['name']} version {v['version']}", fg="yellow")
        echo(f"URI:        {v['uri']}")
    else:
        echo(f"model {d['uri']}", fg="yellow")
    if d["model_id"]:
        echo(f"Model id:   {d['model_id']}")
    if v:
        echo(f"Source:     {v['source']}")
        if v["run_id"]:
            echo(f"Run:        {v['run_id']}")
        echo(f"Registered: {_when(v['registered_at'])} by {v['registered_by']}")
        if v["aliases"]:
            echo(f"Aliases:    {', '.join(v['aliases'])}")
    echo(
        "Trusted:    "
        + (
            "yes (from this repository)"
            if d["trusted"]
            else "no: its pickles load only with --trust"
        )
    )
    fmt = "" if d["format"] == "mlvc" else f" (read from an {d['format']} model)"
    echo(f"Flavor:     {d['flavor']} [{', '.join(d['flavors'])}]{fmt}")
    sig = d["signature"] or {}
    for side in ("inputs", "outputs"):
        echo(f"{side.capitalize() + ':':12}{_schema_line(sig.get(side))}")
    if d["requirements"]:
        echo(f"Requires:   {' '.join(d['requirements'])}")
    if d["alias_history"]:
        echo("\nAlias history:")
        for e in d["alias_history"]:
            what = (
                f"{e['alias']} -> {e['version']}"
                + (f" (was {e['previous']})" if e["previous"] else "")
                if e["action"] == "set"
                else f"{e['alias']} deleted (was {e['previous']})"
            )
            echo(f"  {_when(e['at'])}  {what}  by {e['by']}")


def _schema_line(schema) -> str:
    if not schema:
        return "(none)"
    if schema.get("kind") == "tensor":
        shape = ", ".join("N" if d == -1 else str(d) for d in schema["shape"])
        return f"tensor of {type_name(schema['dtype'])} ({shape})"
    return ", ".join(f"{c['name']}: {type_name(c['type'])}" for c in schema["columns"])


@models.command()
@click.argument("uri")
@click.option(
    "-i",
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="A JSON (scoring format), CSV or Arrow file; - reads stdin as JSON.",
)
@click.option(
    "-t",
    "--content-type",
    default=None,
    help="The input's type: json, csv or arrow (default: from the file's extension).",
)
@click.option("--trust", is_flag=True, help=TRUST_HELP)
def predict(uri: str, input_path: str, content_type: str | None, trust: bool) -> None:
    """Score a file with a model and print the predictions as JSON.

    Example: mlvc models predict models:/iris@champion -i batch.csv
    """
    from ..models import load, model_uri, payload

    with click.open_file(input_path, "rb") as f:
        body = f.read()
    model = load(model_uri(uri), trust=trust or None)
    pred = model.predict_payload(body, payload.content_type_of(input_path, content_type))
    sys.stdout.buffer.write(payload.predictions_json(pred) + b"\n")


@models.command()
@click.argument("uri")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("-p", "--port", default=5000, show_default=True, type=int)
@click.option("-w", "--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option("--trust", is_flag=True, help=TRUST_HELP)
@click.option(
    "--max-concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Requests scored at once per worker; more get 503 with Retry-After "
    "(default 8, or MLVC_SERVE_MAX_CONCURRENCY).",
)
def serve(
    uri: str,
    host: str,
    port: int,
    workers: int,
    access_log: bool,
    trust: bool,
    max_concurrency: int | None,
) -> None:
    """Serve a model over REST: /ping, /version, /metadata, POST /invocations.

    /invocations reads MLflow's JSON formats (dataframe_split, dataframe_records, instances,
    inputs), CSV (text/csv) and Arrow IPC (application/vnd.apache.arrow.stream). Needs the
    serve extra: pip install 'mlvc[serve]'.
    Example: mlvc models serve models:/iris@champion --port 5001
    """
    from ..models import api
    from ..server.scoring import require_extra
    from ..server.scoring import serve as run_server

    require_extra()
    run_server(
        api.model_uri(uri),
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        trust=trust or None,
        max_concurrency=max_concurrency,
    )


COMMANDS = (models,)
