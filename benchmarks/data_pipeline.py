"""Throughput of the training input pipeline, per corruption track.

    python benchmarks/data_pipeline.py --dataset=bsd300 \
        --manual_dir=../shared/data/BSDS300 --data_dir=/tmp/tfds --image_size=128 \
        --batch_size=64

Builds the training pipeline of `cascade_tf.data.pipeline.make_dataset`
(decode, cache, shuffle, random crop + resize, flip, batch, corrupt,
prefetch), warms it up until the decoded images are cached, then times
`--batches` batches per repeat and prints images/s per track as the median
of `--repeats` repeats with the min and max. Run it alone on the machine.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from cascade_tf import cli
from cascade_tf import runtime
from cascade_tf.config import TRACKS
from cascade_tf.data import pipeline
from cascade_tf.data import sources

cli.define_flags(flags, cli.DATA_FLAGS)
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("batches", 20, "Batches timed per repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per track (the median is reported).")
flags.DEFINE_list("tracks", list(TRACKS), "Tracks to time.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = cli.config_from_flags(FLAGS, cli.DATA_FLAGS).data
  source = sources.load_source(cfg, "train")
  print(f"machine: {runtime.cpu_info()[0]}, {os.cpu_count()} logical CPUs; TF {tf.__version__}")
  print(f"dataset: {cfg.dataset} train ({source.num_images} images), S={cfg.image_size}, "
        f"batch {FLAGS.batch_size}, {FLAGS.batches} batches x {FLAGS.repeats} repeats")
  print()
  print("| track | images/s (median) | min | max |")
  print("|---|---|---|---|")
  for track in FLAGS.tracks:
    dataset = pipeline.make_dataset(cfg, split="train", track=track, batch_size=FLAGS.batch_size,
                                    training=True, source=source)
    iterator = iter(dataset)
    # Warm-up: one pass over the source fills the cache, then a few batches more.
    warmup = max(2, (source.num_images or 64) // FLAGS.batch_size + 3)
    for _ in range(warmup):
      next(iterator)
    rates = []
    for _ in range(FLAGS.repeats):
      start = time.perf_counter()
      for _ in range(FLAGS.batches):
        batch = next(iterator)
      batch["corrupted"].numpy()
      rates.append(FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start))
    print(f"| {track} | {statistics.median(rates):.0f} | {min(rates):.0f} | {max(rates):.0f} |")


if __name__ == "__main__":
  app.run(main)
