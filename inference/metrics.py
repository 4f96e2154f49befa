"""The inference worker's Prometheus metrics (served by ``dermbridge.metrics``): the latency of each step
per model (the forward pass of a batch, an image's findings commit, its explanations). Labels: the
configured model's key and the step's name, nothing of an image or patient."""

from __future__ import annotations

from prometheus_client import Histogram

STEP_SECONDS = Histogram(
    "dermbridge_inference_step_duration_seconds",
    "AI analysis: a batch's forward pass, an image's findings commit, its explanations",
    ["model", "step"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
