"""feedback-loop-dagster: the learning loop for patterns, as Dagster assets.

The original design's API is exported lazily, so `import feedback_loop_dagster` stays light
(Dagster is imported only when an orchestration runs):

    from feedback_loop_dagster import ModelFeedbackLoopInput, NodeFeedbackLoopOrchestrator
"""

_LAZY = {
    "NodeFeedbackLoopOrchestrator": "feedback_loop_dagster.orchestrator",
    "ModelFeedbackLoopInput": "feedback_loop_dagster.contracts",
    "ModelFeedbackLoopOutput": "feedback_loop_dagster.contracts",
    "ModelResult": "feedback_loop_dagster.contracts",
    "FeedbackLoopStage": "feedback_loop_dagster.contracts",
    "Lineage": "feedback_loop_dagster.lib.lineage",
    "LineageGraph": "feedback_loop_dagster.lib.lineage",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'feedback_loop_dagster' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
