"""Where vectors are published: :class:`VectorOutput` and one module per store."""

from beam_e5.io.targets.base import JobShape, OutputRun, VectorOutput

__all__ = ["JobShape", "OutputRun", "VectorOutput"]
