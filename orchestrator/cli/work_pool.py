"""``orch work-pool ...``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import client, fail, print_json, table

app = typer.Typer(help="Manage work pools.", no_args_is_help=True)
NAME = typer.Argument(..., help="Name of the work pool.", show_default=False)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Name of the new pool (no / % & > <, at most 255 characters).",
                               show_default=False),
    type_: str = typer.Option("process", "--type", "-t", help="process, docker or kubernetes."),
    base_job_template: Path = typer.Option(None, "--base-job-template", help="JSON file with the job template."),
    concurrency_limit: int = typer.Option(None, "--concurrency-limit", min=0, max=checks.INT32_MAX,
                                          help="Most runs of the pool at once (default: no limit)."),
    paused: bool = typer.Option(False, "--paused", help="Create it paused: its runs wait until it is resumed."),
) -> None:
    """Create a work pool (with its 'default' queue)."""
    from orchestrator import schemas

    template = None
    if base_job_template is not None:
        try:
            template = json.loads(base_job_template.read_text())
        except (OSError, ValueError) as error:
            fail(f"cannot read base job template {base_job_template}: {error}")
    pool = client().create_work_pool(schemas.WorkPoolCreate(
        name=name, type=type_, base_job_template=template, concurrency_limit=concurrency_limit, paused=paused))
    print(f"Created work pool '{pool.name}' of type {pool.type}.")


@app.command("ls")
def ls() -> None:
    """List the work pools: type, status (READY while a worker is online), paused, limit."""
    pools = client().list_work_pools()
    table("Work pools", ["name", "type", "status", "paused", "concurrency limit"],
          [[p.name, p.type, p.status, p.paused, p.concurrency_limit] for p in pools])


@app.command("inspect")
def inspect(name: str = NAME) -> None:
    """Print a work pool as JSON, with its base job template."""
    print_json(client().read_work_pool(name))


def _update(name: str, **changes: object) -> None:
    from orchestrator import schemas

    client().update_work_pool(name, schemas.WorkPoolUpdate(**changes))  # type: ignore[arg-type]


@app.command("pause")
def pause(name: str = NAME) -> None:
    """Pause a work pool: its due runs wait (they are not published) until it is resumed."""
    _update(name, paused=True)
    print(f"Paused work pool '{name}'.")


@app.command("resume")
def resume(name: str = NAME) -> None:
    """Resume a paused work pool: its due runs go out at once."""
    _update(name, paused=False)
    print(f"Resumed work pool '{name}'.")


# Unknown options are taken as arguments: a negative LIMIT ("-1") is then a number to refuse with
# the values allowed, not an option the parser does not know.
@app.command("set-concurrency-limit", context_settings={"ignore_unknown_options": True})
def set_concurrency_limit(
    name: str = NAME,
    limit: int = typer.Argument(..., help="Most runs of the pool at once: 0 or more (0 starts nothing).",
                                show_default=False),
) -> None:
    """Set how many runs of the pool may run at once."""
    if not 0 <= limit <= checks.INT32_MAX:
        fail(f"concurrency limit {limit}: give 0 to {checks.INT32_MAX} runs at once (0 starts nothing); to remove "
             f"the limit: orch work-pool clear-concurrency-limit {name}", code=2)
    _update(name, concurrency_limit=limit)
    print(f"Set concurrency limit of work pool '{name}' to {limit}.")


@app.command("clear-concurrency-limit")
def clear_concurrency_limit(name: str = NAME) -> None:
    """Remove the pool's concurrency limit: any number of its runs at once."""
    _update(name, concurrency_limit=None)
    print(f"Removed the concurrency limit of work pool '{name}'.")


@app.command("delete")
def delete(name: str = NAME) -> None:
    """Delete a work pool (refused while deployments use it)."""
    client().delete_work_pool(name)
    print(f"Deleted work pool '{name}'.")


@app.command("default-template")
def default_template(
    type_: str = typer.Option("process", "--type", "-t", help="process, docker or kubernetes."),
) -> None:
    """Print the default base job template of a worker type."""
    from job_templates.render import default_template as load

    try:
        print_json(load(type_))
    except KeyError:
        fail(f"unknown worker type '{type_}'; known: process, docker, kubernetes")


@app.command("provision-infrastructure")
def provision_infrastructure(
    name: str = NAME,
    namespace: str = typer.Option(None, "--namespace", "-n",
                                  help="Namespace of the pool's Jobs (default: the pool template's namespace)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the manifests as YAML and change nothing."),
) -> None:
    """Make what a kubernetes pool needs in its Jobs' namespace: the namespace, the worker's
    ServiceAccount with a Role of what the Kubernetes worker does there, and the runs' ServiceAccount
    (no rights); record the namespace and the runs' account as the pool's `namespace` and
    `service_account_name` defaults. Running it again changes nothing."""
    import yaml

    from orchestrator import schemas
    from workers.kubernetes import provision

    api = client()
    pool = api.read_work_pool(name)
    if pool.type != "kubernetes":
        fail(f"work pool '{name}' is of type {pool.type}: provision-infrastructure is for kubernetes pools")
    variables = pool.base_job_template.get("variables", {}).get("properties", {})
    namespace = namespace or str((variables.get("namespace") or {}).get("default") or "default")
    if not provision.NAMESPACE.fullmatch(namespace):
        fail(f"invalid namespace '{namespace}': lowercase letters, digits and '-', at most 63 characters")
    docs = provision.manifests(name, namespace)
    account = provision.runs_account(name)
    template, missing = provision.record_in_template(pool.base_job_template, namespace, account)
    if dry_run:
        print(f"# work pool '{name}': its base job template would default to namespace={namespace}, "
              f"service_account_name={account}; run its worker as {provision.worker_account(name)}")
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")
        return
    try:
        changes = provision.apply(provision.load_api_client(), docs)
    except provision.ProvisionError as error:
        fail(str(error))
    for change in changes:
        print(change)
    recorded = template != pool.base_job_template
    if recorded:
        api.update_work_pool(name, schemas.WorkPoolUpdate(base_job_template=template))
        print(f"Recorded namespace={namespace} and service_account_name={account} in work pool '{name}'.")
    print(f"Run the pool's worker as ServiceAccount {provision.worker_account(name)} in namespace {namespace} "
          "(or bind its Role to your worker's account).")
    for variable in missing:
        print(f"Note: the pool's base job template has no '{variable}' variable; set it in its job manifest.")
    if not recorded and all(c.action == "unchanged" for c in changes):
        print(f"Nothing to change: work pool '{name}' is already provisioned in namespace {namespace}.")
