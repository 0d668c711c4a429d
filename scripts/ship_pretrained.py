"""Writes a training workdir's cascade as the shipped model (cascade_tf/pretrained/).

    python scripts/ship_pretrained.py --workdir=/work/runs/ship
    python scripts/ship_pretrained.py --workdir=runs/mine --directory=/tmp/my_pretrained

The generator and restorer with the workdir's most trained weights (as
`evaluate.py --workdir` scores them), stored in float16 with batch norm
unfolded, the workdir's config.json, and SHA256SUMS over all of them
(`cascade_tf.pretrained.ship`). MODEL_CARD.md is written by hand.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

import cascade_tf  # noqa: F401  (before TensorFlow)
from cascade_tf import pretrained

_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir to ship.")
_DIRECTORY = flags.DEFINE_string("directory", pretrained.DIRECTORY,
                                 "Where to write (default: the package's pretrained folder).")


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required.")
  try:
    sums = pretrained.ship(_WORKDIR.value, _DIRECTORY.value)
  except ValueError as e:
    print(f"ship_pretrained.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  size = sum(os.path.getsize(os.path.join(_DIRECTORY.value, name)) for name in sums)
  for name, digest in sums.items():
    print(f"{digest}  {name}")
  print(f"{len(sums)} files, {size / 2**20:.2f} MiB in {_DIRECTORY.value}")


if __name__ == "__main__":
  app.run(main)
