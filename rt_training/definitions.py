"""The Dagster code location: one ``Definitions`` for the pipeline named by ``$RT_TRAINING_SPEC``.

Loading imports nothing heavy (no torch, no evidently): runs and sensors import what they need.
"""

from rt_training.defs.factory import build_definitions
from rt_training.spec import load_spec

defs = build_definitions(load_spec())
