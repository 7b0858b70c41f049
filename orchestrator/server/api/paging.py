"""The next page of a list, for clients that follow links: ``Link: <url>; rel="next"`` (RFC 8288),
the same address with ``cursor`` set (and a deprecated ``offset`` dropped)."""

from __future__ import annotations

from fastapi import Query, Request, Response

from orchestrator.server.services.keyset import MAX_CURSOR_CHARS

CURSOR = Query(None, max_length=MAX_CURSOR_CHARS,
               description="Where the page starts: `next` of the page before, or its Link header's rel=\"next\".")
OFFSET_HELP = "Deprecated (it reads and skips every row before the page): use `cursor`."


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    if cursor is not None:
        url = request.url.remove_query_params("offset").include_query_params(cursor=cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
