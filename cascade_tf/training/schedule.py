"""When periodic work is due in a training loop: one rule for both trainers.

`is_due(step, every, target)` is what `training/loop.py` (TensorFlow) and
`scripts/train_jax.py` (JAX) ask before logging, validating, checkpointing
or reading losses back from the device. Pure Python: it imports nothing,
so the JAX trainer can use it on a machine without TensorFlow.
"""

from __future__ import annotations


def is_due(step: int, every: int, target: int) -> bool:
  """True every `every` steps (`every` <= 0: never) and at the last step, `target`."""
  return step == target or (every > 0 and step % every == 0)
