"""The control plane: the REST API (``api/``), domain services over a session (``services/``), the
database (``db/``), the event hub (``hub/``) and the background services on one ``Service`` loop."""
