"""What the API says of its broker (``GET /api/broker``)."""

from pydantic import Field

from orchestrator.schemas.base import OutModel


class BrokerInfo(OutModel):
    url: str = Field(description="Where the server publishes due runs. Its password is *** unless the server "
                     "has no keys, or the caller sent a valid one.")
    redacted: bool = Field(description="The URL's password was replaced by ***.")
    embedded: bool = Field(description="The embedded broker: a SQLite file on the server's machine, in its ORCH_HOME.")
    identity: str = Field(description="The id stored in the broker: a worker whose broker holds another one "
                          "would never receive a run.")
