"""Which broker a worker consumes, checked against the server's before it starts.

A worker on another broker than its server shows ONLINE and never receives a run; this makes that
a refusal with the reason instead. The URL: ``ORCH_BROKER_URL`` when set; otherwise the server's
own, from ``GET /api/broker``, except for the embedded broker, a file that serves only workers on
the server's machine with the same ``ORCH_HOME`` (the worker takes its home's file, which is the
server's exactly then). Either way the id stored in that broker must be the one the API reports
(``pools/identity.py``): URLs may differ between machines, ids do not.
"""

from __future__ import annotations

from orchestrator.client import Client
from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings, redacted
from pools import identity
from pools.broker import BrokerUnavailable


class WrongBroker(OrchestratorError):
    """The worker's broker is not the server's, or cannot be reached."""

    code = "wrong_broker"


def broker_url_for_worker(api: Client, settings: Settings) -> str:
    """The broker URL this worker must consume, or ``WrongBroker`` saying why none will do."""
    server = api.read_broker()
    if settings.broker_url:
        url = settings.broker_url
    elif server.embedded:
        url = settings.resolved_broker_url
    elif server.redacted:
        raise WrongBroker(f"the server's broker ({server.url}) needs a password the API gives only to clients "
                          "with a valid key: set ORCH_API_KEY, or ORCH_BROKER_URL")
    else:
        url = server.url
    try:
        found = identity.read(url)
    except BrokerUnavailable as error:
        raise WrongBroker(f"cannot reach the broker at {redacted(url)}: {error}") from None
    if found != server.identity:
        raise WrongBroker(_mismatch(settings, url, server.url, server.embedded))
    return url


def _mismatch(settings: Settings, url: str, server_url: str, embedded: bool) -> str:
    never = "runs the server publishes would never reach this worker"
    if settings.broker_url:
        return (f"ORCH_BROKER_URL={redacted(url)} is not the server's broker ({server_url}): {never}; set it to "
                "the server's broker, or unset it to use the one the API names")
    if embedded:
        return (f"the server uses its embedded broker ({server_url}), which serves only workers on its machine "
                f"with the same ORCH_HOME, and this worker's ORCH_HOME is {settings.home_dir}: {never}; start the "
                "worker with the server's ORCH_HOME, or give the server and its workers one Redis (ORCH_BROKER_URL)")
    return (f"the broker the API names ({server_url}) is another broker from this machine: {never}; set "
            "ORCH_BROKER_URL to the server's broker as this machine reaches it")
