"""tickets: find, transfer and stress-test lottery tickets in pre-trained models.

The Python API mirrors the CLI::

    import tickets
    result = tickets.find_tickets(tickets.FindConfig(model="resnet20-cifar10", task="cifar10"), out="runs")
    ticket = tickets.load_ticket(result.levels[3]["ticket"])
    tickets.transfer_ticket(tickets.TransferConfig(model="resnet20-cifar10", task="cifar100", ticket=...), out="runs")
"""

__version__ = "0.1.0"

_LAZY = {
    "Mask": "tickets.masks",
    "PrunableSet": "tickets.masks",
    "Ticket": "tickets.ticket",
    "load_ticket": "tickets.ticket",
    "save_ticket": "tickets.ticket",
    "FindConfig": "tickets.config",
    "TransferConfig": "tickets.config",
    "TrainConfig": "tickets.config",
    "ScheduleConfig": "tickets.config",
    "AdversarialConfig": "tickets.config",
    "DataConfig": "tickets.tasks.base",
    "find_tickets": "tickets.verbs.find",
    "transfer_ticket": "tickets.verbs.transfer",
    "evaluate": "tickets.training.evaluate",
    "fine_tune": "tickets.training.loop",
    "load_model": "tickets.models",
    "load_task": "tickets.tasks",
    "from_module": "tickets.models.base",
    "TicketsError": "tickets.errors",
    "apply_ticket": "tickets.integrations",
    "Task": "tickets.tasks.base",
}

# API names that differ from the function's name in its module (a function named like its module would be
# shadowed by the submodule once imported).
_ALIASES = {"transfer_ticket": "transfer"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    """Import submodules on first use, so `import tickets` stays fast and needs no optional dependency."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), _ALIASES.get(name, name))
    raise AttributeError(f"module 'tickets' has no attribute {name!r}")
