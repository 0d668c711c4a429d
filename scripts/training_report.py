"""Plots a workdir's loss curves and prints its validation PSNR table, or compares runs.

    python scripts/training_report.py --workdir=runs/cpu --output_png=docs/training_cpu.png
    python scripts/training_report.py --compare=intact=runs/a,no_pretrain=runs/b \\
        --output_png=curves.png

With --compare (instead of --workdir), every run's validation PSNR is drawn
against the training images it has seen, one panel per validation track
(`report.plot_runs`, as scripts/table2.py draws its variants), and a table
says per run, stage and output where the curve ended and how much its mean
moved between the stage's last two quarters (`report.plateau_table`): the
evidence that a budget let the curves flatten.
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cascade_tf import cli  # pylint: disable=g-import-not-at-top
from cascade_tf.training import report  # pylint: disable=g-import-not-at-top

flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("compare", None, "Several runs in one plot instead: name=WORKDIR,... "
                    "(legend order).")
flags.DEFINE_string("title", "", "--compare: the figure's title.")
flags.DEFINE_string("output_png", None, "Where to write the curves (PNG).", required=True)

FLAGS = flags.FLAGS


def main(argv):
  del argv
  try:
    if bool(FLAGS.workdir) == bool(FLAGS.compare):
      raise ValueError("give exactly one of --workdir (one run's curves) and "
                       "--compare=name=WORKDIR,... (several runs' validation curves).")
    if FLAGS.compare:
      runs = dict(cli.name_value_pairs(FLAGS.compare, "--compare", "WORKDIR"))
      print(report.plateau_table(report.plot_runs(runs, FLAGS.output_png, FLAGS.title)))
    else:
      report.plot_curves(FLAGS.workdir, FLAGS.output_png)
      print(report.validation_table(FLAGS.workdir))
  except ValueError as e:
    sys.exit(f"training_report.py: error: {e}")
  print(f"\nwrote {FLAGS.output_png}")


if __name__ == "__main__":
  app.run(main)
