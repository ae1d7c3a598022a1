"""What the loop did for a pattern over a span of windows, read back from the warehouse (the
fields of the original design's ModelFeedbackLoopOutput)."""

from feedback_loop_dagster.lib.report.outcome import LoopOutcome, loop_outcome

__all__ = ["LoopOutcome", "loop_outcome"]
