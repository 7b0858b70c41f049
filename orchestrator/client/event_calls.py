"""The calls about what happens and what it triggers: events (sent, read by pages, streamed live),
automations and incoming webhooks. ``Client`` (``calls.py``) has them with every other call."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.client.transport import Transport
from orchestrator.errors import InvalidInput

if TYPE_CHECKING:
    from orchestrator import schemas
    from orchestrator.schemas.event_queries import Event, EventPage


class EventCalls(Transport):
    """Events, automations and webhooks (``Client`` inherits them)."""

    def emit_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Send a batch of events (``schemas.events.EventIn`` as JSON); returns how many were new."""
        return int(self.request("POST", "/events", body=list(events))["recorded"])

    # automations

    def create_automation(self, definition: dict[str, Any]) -> schemas.automations.Automation:
        """Create an automation from its definition (``schemas.automations.AutomationCreate`` as JSON)."""
        from orchestrator.schemas.automations import Automation

        return Automation.model_validate(self.request("POST", "/automations", body=definition))

    def read_automation(self, automation_id: uuid.UUID) -> schemas.automations.Automation:
        from orchestrator.schemas.automations import Automation

        return Automation.model_validate(self.request("GET", f"/automations/{automation_id}"))

    def list_automations(self, **filters: Any) -> list[schemas.automations.Automation]:
        """Filters: ``owner``, ``enabled``, ``name``; every page, or one of ``limit`` (after ``offset``)."""
        from orchestrator.schemas.automations import Automation

        return [Automation.model_validate(a) for a in self.listed("/automations", filters)]

    def read_automation_ref(self, ref: str) -> schemas.automations.Automation:
        """An automation by id, or by name when exactly one has it."""
        try:
            return self.read_automation(uuid.UUID(ref))
        except ValueError:
            pass
        found = self.list_automations(name=ref, limit=2)
        if len(found) != 1:
            from orchestrator.errors import NotFound

            raise (NotFound(f"automation {ref!r} not found") if not found else
                   InvalidInput(f"several automations are named {ref!r}: use the id"))
        return found[0]

    def update_automation(self, automation_id: uuid.UUID, changes: dict[str, Any]) -> schemas.automations.Automation:
        from orchestrator.schemas.automations import Automation

        return Automation.model_validate(self.request("PATCH", f"/automations/{automation_id}", body=changes))

    def set_automation_enabled(self, automation_id: uuid.UUID, enabled: bool) -> schemas.automations.Automation:
        from orchestrator.schemas.automations import Automation

        action = "enable" if enabled else "disable"
        return Automation.model_validate(self.request("POST", f"/automations/{automation_id}/{action}"))

    def delete_automation(self, automation_id: uuid.UUID) -> None:
        self.request("DELETE", f"/automations/{automation_id}")
    # --- events: reading (pages and the live stream) ------------------------------------------

    def read_events(self, where: dict[str, Any] | None = None, *, limit: int = 50,
                    page: str | None = None) -> EventPage:
        """A page of events matching ``where`` (``schemas.event_queries.EventFilter`` as a dict); pass the
        page's ``next_page`` with the same filter to read on."""
        from orchestrator.schemas.event_queries import EventPage

        body = {"filter": where or {}, "limit": limit, "page": page}
        return EventPage.model_validate(self.request("POST", "/events/filter", body=body))

    def stream_events(self, *, event: Sequence[str] = (), resource: str | None = None, related: str | None = None,
                      labels: Sequence[str] = (), after: str | None = None,
                      reconnect_seconds: float = 1.0) -> Iterator[tuple[str, Event]]:
        """Events as they are stored (Server-Sent Events), each with its cursor, until the caller
        stops iterating. A dropped connection is resumed after the last cursor (no gap, no
        duplicate) every ``reconnect_seconds``; an error answer (a bad filter) raises."""
        import http.client  # here: a stream is read line by line as it comes (transport.py's connections read whole answers)

        from orchestrator.client.transport import error_from_answer
        from orchestrator.errors import NotTheApi
        from orchestrator.schemas.event_queries import Event

        params = {"event": list(event), "resource": resource, "related": related, "label": list(labels)}
        while True:
            query = urllib.parse.urlencode({k: v for k, v in params.items() if v}, doseq=True)
            factory = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            connection = factory(self._host, self._port, timeout=None)  # heartbeats every 15 s; no read timeout
            headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
            headers["Accept"] = "text/event-stream"
            if after:
                headers["Last-Event-ID"] = after
            try:
                connection.request("GET", f"{self._prefix}/events/stream?{query}", headers=headers)
                response = connection.getresponse()
                if response.status >= 400:
                    raise error_from_answer(response.status, response.read()) or NotTheApi(
                        f"{self.api_url}/events/stream answered {response.status}")
                cursor, data = None, []
                for raw in response:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("id:"):
                        cursor = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:  # the blank line that ends an event
                        after = cursor or after
                        yield after or "", Event.model_validate_json("\n".join(data))
                        cursor, data = None, []
            except (OSError, http.client.HTTPException):
                pass  # dropped: resume after the last cursor
            finally:
                connection.close()
            self._retries_stopped.wait(reconnect_seconds)

    # incoming webhooks

    def create_webhook(self, name: str, template: str, description: str = "") -> dict[str, Any]:
        """Create an incoming webhook; the answer holds its ``secret`` (shown only now) and ``url_path``."""
        body = {"name": name, "template": template, "description": description}
        return dict(self.request("POST", "/webhooks", body=body))

    def list_webhooks(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/webhooks"))

    def delete_webhook(self, ref: str) -> None:
        """Delete a webhook by id, name or slug."""
        self.request("DELETE", f"/webhooks/{urllib.parse.quote(ref, safe='')}")
