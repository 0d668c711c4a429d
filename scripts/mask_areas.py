"""The share of the image each mask family covers, over many seeded draws.

    python scripts/mask_areas.py [--draws=1000] [--image_size=128]

Prints a Markdown table (mean, 5th and 95th percentile, min and max of the
hole's share of the image, and milliseconds per mask) for every family of
`cascade_tf.data.masks`, drawn with the stateless seeds (0, i), i < draws,
as the evaluation tracks draw them. docs/masks.md holds its output.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from cascade_tf import config as config_lib  # pylint: disable=wrong-import-position
from cascade_tf import runtime  # pylint: disable=wrong-import-position
from cascade_tf.data import masks  # pylint: disable=wrong-import-position

flags.DEFINE_integer("draws", 1000, "Masks drawn per family.")
flags.DEFINE_integer("image_size", 128, "Side S of the square masks, px.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = config_lib.with_overrides(config_lib.paper(), {
      "data.image_size": FLAGS.image_size, "data.hole_size": FLAGS.image_size // 2}).data
  seeds = tf.stack([tf.zeros([FLAGS.draws], tf.int64),
                    tf.range(FLAGS.draws, dtype=tf.int64)], axis=-1)
  print(f"{FLAGS.draws} draws per family, {FLAGS.image_size} x {FLAGS.image_size} px, "
        f"mask_mix (centre, box, free_form) = {cfg.mask_mix}; CPU: {runtime.cpu_info()}\n")
  print("| family | mean area | 5th pct | 95th pct | min | max | ms per mask |")
  print("|---|---|---|---|---|---|---|")
  for family in masks.FAMILIES:
    draw = tf.function(lambda s, family=family: masks.masks(family, s, FLAGS.image_size,
                                                            FLAGS.image_size, cfg))
    draw(seeds)  # Trace once, outside the timing.
    start = time.perf_counter()
    area = draw(seeds).numpy().mean(axis=(1, 2, 3))
    ms = (time.perf_counter() - start) / FLAGS.draws * 1000
    p5, p95 = np.percentile(area, [5, 95])
    print(f"| `{family}` | {area.mean():.1%} | {p5:.1%} | {p95:.1%} | {area.min():.1%} | "
          f"{area.max():.1%} | {ms:.2f} |")


if __name__ == "__main__":
  app.run(main)
