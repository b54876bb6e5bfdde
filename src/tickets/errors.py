"""The one exception type users see: a single line naming the problem and the fix."""


class TicketsError(Exception):
    """Bad input or an unusable file. The CLI prints `tickets: error: <message>` and exits with code 2.

    Messages name the problem *and* the fix, e.g.
    "unknown task 'cifar11': choose one of cifar10, cifar100, ... (see `tickets find --help`)".
    """


def counted(n: int, noun: str) -> str:
    """``1 step``, ``2 steps``: a count with its (regular) noun in the right number, for messages."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
