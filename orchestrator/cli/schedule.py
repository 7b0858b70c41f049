"""``orch deployment schedule ...`` and ``orch deployment backfill``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import client, fail, own_words, parse_key_values, table

app = typer.Typer(help="Schedules of a deployment: list, create, pause, resume, delete, preview.",
                  no_args_is_help=True)
NAME_HELP = "flow/deployment or id"
SLUG_HELP = "Schedule slug or id (may be left out when the deployment has one schedule)."


def _deployment(api: Any, name: str) -> Any:
    return api.read_deployment_ref(name)


def _schedules(api: Any, deployment: Any) -> list[Any]:
    from orchestrator import schemas

    return [schemas.DeploymentSchedule.model_validate(s)
            for s in api.request("GET", f"/deployments/{deployment.id}/schedules")]


def _pick(api: Any, deployment: Any, slug: str | None) -> str:
    if slug:
        return slug
    slugs = [s.slug for s in _schedules(api, deployment)]
    if len(slugs) == 1:
        return slugs[0]
    if not slugs:
        fail(f"deployment {deployment.full_name} has no schedules")
    fail(f"deployment {deployment.full_name} has {len(slugs)} schedules; name one of: {', '.join(slugs)}")


def _paused_note(deployment: Any) -> str | None:
    """What a paused deployment's schedules do (nothing): said wherever they are shown or added, since
    each schedule of it still reads active."""
    if not deployment.paused:
        return None
    return (f"deployment {deployment.full_name} is paused: its schedules create no runs until "
            f"`orch deployment resume {deployment.full_name}`")


def _spec(schedule: Any) -> Any:
    from orchestrator.schedules import parse

    return parse(schedule.model_dump(include={"cron", "day_or", "interval", "anchor_date", "rrule", "timezone"},
                                     exclude_none=True), name=schedule.slug)


@app.command("ls")
def ls(name: str = typer.Argument(..., help=NAME_HELP)) -> None:
    """The deployment's schedules and the next time of each."""
    from orchestrator.schedules import describe, next_times

    api = client()
    deployment = _deployment(api, name)
    rows = []
    now = dt.datetime.now(dt.UTC)
    for schedule in _schedules(api, deployment):
        spec = _spec(schedule)
        upcoming = next_times(spec, now, n=1)
        rows.append([schedule.slug, describe(spec), "yes" if schedule.active else "paused",
                     json.dumps(schedule.parameters) if schedule.parameters else "",
                     upcoming[0].isoformat() if upcoming and schedule.active and not deployment.paused else ""])
    table(f"Schedules of {deployment.full_name}", ["slug", "schedule", "active", "parameters", "next"], rows)
    if note := _paused_note(deployment):
        print(f"Note: {note}.")


@app.command("create")
def create(
    name: str = typer.Argument(..., help=NAME_HELP),
    cron: str = typer.Option(None, "--cron", help="Cron expression, e.g. '0 9 * * 1-5'."),
    interval: str = typer.Option(None, "--interval", metavar="DURATION", callback=checks.interval,
                                 help="Seconds, 5m / 2h / 1d, or ISO 8601 (PT15M); at least 1 s."),
    rrule: str = typer.Option(None, "--rrule", help="RFC 5545 rule, e.g. 'FREQ=WEEKLY;BYDAY=MO'."),
    timezone: str = typer.Option(None, "--timezone", help="IANA zone, e.g. Europe/Berlin (default UTC)."),
    anchor_date: str = typer.Option(None, "--anchor-date", help="Interval start, ISO 8601 (naive: in --timezone)."),
    day_and: bool = typer.Option(False, "--day-and", help="Cron: run only on days matching day-of-month AND "
                                                           "day-of-week (default: either)."),
    slug: str = typer.Option(None, "--slug", help="Name of the schedule within the deployment."),
    param: list[str] = typer.Option([], "--param", help="Parameter override as key=value (repeatable)."),
    inactive: bool = typer.Option(False, "--inactive", help="Create it paused."),
) -> None:
    """Add a schedule to a deployment."""
    import pydantic

    from orchestrator import schemas
    from orchestrator.schedules import describe

    given = [flag for flag, value in (("--cron", cron), ("--interval", interval), ("--rrule", rrule)) if value]
    if len(given) != 1:
        fail("give exactly one of --cron, --interval or --rrule")
    fields: dict[str, Any] = {"cron": cron, "rrule": rrule, "timezone": timezone, "slug": slug,
                              "active": not inactive, "parameters": parse_key_values(param, "--param")}
    if interval:
        fields["interval"] = checks.interval_value(interval)
    if anchor_date:
        fields["anchor_date"] = anchor_date
    if day_and:
        fields["day_or"] = False
    try:
        request = schemas.ScheduleCreate.model_validate({k: v for k, v in fields.items() if v is not None})
    except pydantic.ValidationError as error:
        fail(first_error(error))
    api = client()
    deployment = _deployment(api, name)
    data = api.request("POST", f"/deployments/{deployment.id}/schedules",
                       body=request.model_dump(mode="json", exclude_none=True))
    created = schemas.DeploymentSchedule.model_validate(data)
    print(f"Created schedule '{created.slug}' of {deployment.full_name}: {describe(_spec(created))}.")
    if note := _paused_note(deployment):
        print(f"Note: {note}.")


def first_error(error: Any) -> str:
    """A pydantic ``ValidationError``'s first problem, on one line."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = own_words(first.get("msg", error))
    return f"{where}: {message}" if where else message


def _set_active(name: str, slug: str | None, active: bool) -> None:
    api = client()
    deployment = _deployment(api, name)
    slug = _pick(api, deployment, slug)
    api.request("PATCH", f"/deployments/{deployment.id}/schedules/{slug}", body={"active": active})
    print(f"{'Resumed' if active else 'Paused'} schedule '{slug}' of {deployment.full_name}.")


@app.command("pause")
def pause(name: str = typer.Argument(..., help=NAME_HELP),
          slug: str = typer.Argument(None, help=SLUG_HELP)) -> None:
    """Stop scheduling; the schedule's future runs that have not started are deleted."""
    _set_active(name, slug, False)


@app.command("resume")
def resume(name: str = typer.Argument(..., help=NAME_HELP),
           slug: str = typer.Argument(None, help=SLUG_HELP)) -> None:
    """Schedule again; runs ahead are created at once."""
    _set_active(name, slug, True)


@app.command("delete")
def delete(name: str = typer.Argument(..., help=NAME_HELP),
           slug: str = typer.Argument(None, help=SLUG_HELP)) -> None:
    """Delete the schedule and its future runs that have not started."""
    api = client()
    deployment = _deployment(api, name)
    slug = _pick(api, deployment, slug)
    api.request("DELETE", f"/deployments/{deployment.id}/schedules/{slug}")
    print(f"Deleted schedule '{slug}' of {deployment.full_name}.")


@app.command("preview")
def preview(name: str = typer.Argument(..., help=NAME_HELP),
            slug: str = typer.Argument(None, help="Only this schedule (default: every schedule)."),
            count: int = typer.Option(10, "-n", "--count", min=1, max=1000, help="How many times to show.")) -> None:
    """The next times of the deployment's schedules, in each schedule's zone."""
    from orchestrator.schedules import describe, next_times

    api = client()
    deployment = _deployment(api, name)
    schedules = [s for s in _schedules(api, deployment) if slug in (None, s.slug, str(s.id))]
    if not schedules:
        fail(f"schedule '{slug}' not found on deployment {deployment.full_name}" if slug
             else f"deployment {deployment.full_name} has no schedules")
    if note := _paused_note(deployment):
        print(f"Note: {note}; the times below are when its schedules would run.")
    now = dt.datetime.now(dt.UTC)
    for schedule in schedules:
        spec = _spec(schedule)
        state = "" if schedule.active else " [paused]"
        print(f"{schedule.slug}: {describe(spec)}{state}")
        for when in next_times(spec, now, n=count):
            print(f"  {when.strftime('%Y-%m-%d %H:%M:%S %Z (%z)')}")


def backfill(
    name: str = typer.Argument(..., help=NAME_HELP),
    start: str = typer.Option(..., "--start", metavar="TIME", callback=checks.iso_time,
                              help="Window start, ISO 8601 (naive: local time)."),
    end: str = typer.Option(..., "--end", metavar="TIME", callback=checks.iso_time, help="Window end, inclusive."),
    schedule: list[str] = typer.Option([], "--schedule", help="Only this schedule (repeatable; default: all "
                                                              "active ones)."),
) -> None:
    """Create the runs the deployment's schedules would have created between --start and --end.

    Runs that exist already are left alone, so repeating it creates nothing new."""
    begin, finish = checks.instant(start), checks.instant(end)
    if finish < begin:
        fail("--end is before --start")
    api = client()
    deployment = _deployment(api, name)
    body: dict[str, Any] = {"start": begin.isoformat(), "end": finish.isoformat()}
    if schedule:
        body["schedules"] = schedule
    result = api.request("POST", f"/deployments/{deployment.id}/backfill", body=body)
    print(f"Backfilled {deployment.full_name} from {begin.isoformat()} to {finish.isoformat()}: "
          f"{result['created']} runs created, {result['existing']} already existed.")
