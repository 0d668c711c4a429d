"""Seconds per training step of single networks, side by side in one run.

    python benchmarks/step_cost.py            # the table of docs/architecture.md

Each row builds one network of a preset (with a variation), and times an
XLA-compiled Adam update on an L1 loss at the given batch and image size:
2 warm-up steps, then the mean of `--steps`. Rows run one after the other
in one process, so their ratios hold on the machine that ran them (quote
`runtime.cpu_info()`, which the table's header prints).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import keras
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import runtime
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import restorer as restorer_lib

_STEPS = flags.DEFINE_integer("steps", 6, "Timed steps per row.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per step.")


def rows():
  """(name, builder, channels, image size) of every row."""
  photo, blind, cpu = config_lib.photo(), config_lib.blind(), config_lib.cpu()
  g = lambda cfg: (lambda size: generator_lib.build_generator(cfg, size))
  r = lambda cfg: (lambda size: restorer_lib.build_restorer(cfg, size))
  dilated = dataclasses.replace(photo.generator, dilations=(2, 4, 8))
  return [
      ("G photo", g(photo.generator), 4, 128),
      ("G photo + dilations (2, 4, 8)", g(dilated), 4, 128),
      ("G photo + dilations, no prefill", g(dataclasses.replace(dilated, prefill=False)), 4, 128),
      ("G blind (cpu widths)", g(blind.generator), 4, 128),
      ("R unet 128 px", r(photo.restorer), 3, 128),
      ("R unet 64 px", r(photo.restorer), 3, 64),
      ("R unet, 1 block per scale, 64 px",
       r(dataclasses.replace(photo.restorer, unet_blocks=1)), 3, 64),
      ("R cpu (16 channels) 128 px", r(cpu.restorer), 3, 128),
  ]


def seconds_per_step(model: keras.Model, images: tf.Tensor, steps: int) -> float:
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(model.trainable_variables)

  @tf.function(jit_compile=True)
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.abs(model(x, training=True) - x[..., :3]))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss

  for _ in range(2):
    step(images).numpy()
  start = time.perf_counter()
  for _ in range(steps):
    step(images).numpy()
  return (time.perf_counter() - start) / steps


def main(argv):
  del argv
  model_name, features = runtime.cpu_info()
  print(f"{model_name} ({' '.join(features)}); TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"batch {_BATCH.value}, XLA, Adam, L1, float32")
  print("| row | image px | s / step |")
  print("|---|---:|---:|")
  for name, build, channels, size in rows():
    model = build(size)
    images = tf.random.uniform([_BATCH.value, size, size, channels])
    print(f"| {name} | {size} | {seconds_per_step(model, images, _STEPS.value):.3f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
