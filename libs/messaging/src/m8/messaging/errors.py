"""How a message handler tells the consumer runner what went wrong."""


class PoisonMessage(Exception):
    """The message can never be handled (undecodable, unknown type): dead-letter it now."""


class TransientError(Exception):
    """Worth retrying: the runner backs off and tries again, then requeues the message."""
