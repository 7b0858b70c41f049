"""The longest wait between two tries of a client's retrying request (it doubles from 0.1 s up to
this): the client's retry loop (``client/transport.py``) waits so, and the server's reaper counts it
in: a holder whose heartbeats failed while the API or its database was down beats again at most
this much later than its heartbeat period once they are back. A module of its own so that the
server reads it without importing the client."""

RETRY_DELAY_MAX_SECONDS = 2.0
