"""The broker's one error, in a module of its own so that every module of ``pools`` can raise it
without importing ``pools.broker`` (which imports them)."""


class BrokerUnavailable(Exception):
    """The broker could not be reached, or refused what was asked of it."""
