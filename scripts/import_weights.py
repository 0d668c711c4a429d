"""Imports the weights of a scripts/train_jax.py run into a training workdir.

    python scripts/import_weights.py --run_dir=/tmp/jax_run --workdir=/work/runs/from_jax
    python evaluate.py --workdir=/work/runs/from_jax --dataset=bsd300 ...

See `cascade_tf.training.imported` for what is written.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

import cascade_tf  # noqa: F401  (before TensorFlow)
from cascade_tf.training import imported

_RUN_DIR = flags.DEFINE_string("run_dir", None, "The --out_dir of scripts/train_jax.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir to write (new, or one of the same "
                               "networks).")


def main(argv):
  del argv
  if not _RUN_DIR.value or not _WORKDIR.value:
    raise app.UsageError("--run_dir and --workdir are required.")
  written = imported.import_run(_RUN_DIR.value, _WORKDIR.value)
  for name, path in sorted(written.items()):
    print(f"{name}: {path}")


if __name__ == "__main__":
  app.run(main)
