"""Plots a workdir's loss curves and prints its validation PSNR table.

    python scripts/training_report.py --workdir=runs/cpu --output_png=docs/training_cpu.png
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cascade_tf.training import report  # pylint: disable=g-import-not-at-top

flags.DEFINE_string("workdir", None, "Training workdir.", required=True)
flags.DEFINE_string("output_png", None, "Where to write the curves (PNG).", required=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  try:
    report.plot_curves(FLAGS.workdir, FLAGS.output_png)
    print(report.validation_table(FLAGS.workdir))
  except ValueError as e:
    sys.exit(f"training_report.py: error: {e}")
  print(f"\nwrote {FLAGS.output_png}")


if __name__ == "__main__":
  app.run(main)
