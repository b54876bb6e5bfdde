"""Training: the masked fine-tuning loop and its callbacks, evaluation, adversarial attacks, logging sinks.

``SINKS`` (the logging-sink registry, ``--log-to``) lives here, free of the loop's imports, so configs can check
sink names without importing training code.
"""

from tickets.registry import Registry

SINKS: Registry = Registry("logging sink")
SINKS.register("tensorboard", "tickets.training.sinks:TensorBoardSink",
               help="TensorBoard event files under <run>/tensorboard/", install="pip install tensorboard")
SINKS.register("mlflow", "tickets.training.sinks:MLflowSink",
               help="an MLflow run per level ($MLFLOW_TRACKING_URI or <out>/mlruns)", install="pip install mlflow")


def parse_sinks(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"tensorboard,mlflow"`` (or a list) → checked sink names; TicketsError naming an unknown one."""
    if not text:
        return []
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s and s.strip()]
    for name in names:
        SINKS.entry(name)
    return names
