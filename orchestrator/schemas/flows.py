"""Flows on the wire: the row each flow name gets (``GET /api/flows``)."""

import datetime as dt
import uuid

from orchestrator.schemas.base import OutModel


class Flow(OutModel):
    id: uuid.UUID
    name: str
    created: dt.datetime
