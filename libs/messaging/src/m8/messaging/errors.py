"""How a message handler tells the consumer runner what went wrong."""


class PoisonMessage(Exception):
    """The message can never be handled (undecodable, unknown type): dead-letter it now."""


class TransientError(Exception):
    """Worth retrying: the runner backs off and tries again, then requeues the message."""


class NotNow(Exception):
    """The message cannot be handled yet, through no fault of its own (another holds what
    it needs): hand it back to the end of its queue, not counted against the queue's
    delivery limit, to be taken again later. Raised soon rather than waited out in hand:
    a message in hand returns counted at every broken connection or killed process, and
    holds a slot that messages of other paths could use. Honoured by `EventConsumer` (an
    RPC server takes it for a failure)."""
