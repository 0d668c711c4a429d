"""Hole masks of any shape: stateless, seedable TensorFlow ops (PROTOCOL.md).

Every function draws one image's mask from a stateless seed of shape [2]
and returns float32 [H, W, 1], 1 in the hole and 0 elsewhere; the same
seed always gives the same mask. They are graph ops, usable inside
`tf.data` (the training and evaluation pipelines map them over one seed
per image). S below is the image's short side.

    centre     the protocol's square of side `hole_size`, centred
    box        1-3 axis-aligned rectangles, sides in [S/8, S/2], anywhere
    free_form  brush strokes in the manner of DeepFill v2 (Yu et al. 2019):
               random walks of straight segments drawn with a round brush of
               random width, added one segment at a time until they cover a
               target share of the image drawn from U[0.10, 0.36]; the
               segment that reaches the target is the last, so the area is
               10-40% (docs/masks.md measures it)
    mixed      one of the three per image, with probabilities
               `DataConfig.mask_mix` (centre, box, free_form)
    free       box or free_form, as `mixed` without the centre square: the
               evaluation tracks `inpaint_free` and `joint_free`

`mask(family, seed, height, width, cfg)` dispatches on the name;
`FAMILIES` lists the names.
"""

from __future__ import annotations

import math

import tensorflow as tf

from cascade_tf.config import DataConfig, MASK_FAMILIES
from cascade_tf.data import appliers

FAMILIES = MASK_FAMILIES

# Boxes: how many, and their sides as shares of S.
MAX_BOXES = 3
BOX_SIDE = (1 / 8, 1 / 2)
# Free-form strokes: DeepFill v2's generator scaled from 256 px to S, with
# more strokes so that every target area can be reached.
STROKES, SEGMENTS_PER_STROKE = 10, 8
SEGMENT_LENGTH = (1 / 16, 1 / 4)  # shares of S
BRUSH_WIDTH = (1 / 24, 1 / 10)  # shares of S
FREE_FORM_TARGET = (0.10, 0.36)  # share of the image the strokes stop at


def _uniform(shape, seed, low, high):
  return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=tf.float32)


def _grid(height, width):
  """Pixel-centre coordinates (rows, cols), float32 [H, W]."""
  rows = tf.cast(tf.range(height), tf.float32)
  cols = tf.cast(tf.range(width), tf.float32)
  return tf.meshgrid(rows, cols, indexing="ij")


def centre(height, width, hole_size):
  """The protocol's centred square of side `hole_size` px."""
  return tf.convert_to_tensor(appliers.hole_mask(height, width, hole_size), tf.float32)


def box(seed, height, width):
  """1-3 rectangles with sides uniform in [S/8, S/2] px, placed uniformly in the image."""
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
  height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  short = tf.minimum(height_f, width_f)
  count = tf.random.stateless_uniform([], seeds[0], minval=1, maxval=MAX_BOXES + 1,
                                      dtype=tf.int32)
  box_h = tf.floor(_uniform([MAX_BOXES], seeds[1], BOX_SIDE[0], BOX_SIDE[1]) * short)
  box_w = tf.floor(_uniform([MAX_BOXES], seeds[2], BOX_SIDE[0], BOX_SIDE[1]) * short)
  top = tf.floor(_uniform([MAX_BOXES], seeds[3], 0.0, 1.0) * (height_f - box_h + 1.0))
  left = tf.floor(_uniform([MAX_BOXES], seeds[4], 0.0, 1.0) * (width_f - box_w + 1.0))
  rows, cols = _grid(height, width)
  inside = ((rows[None] >= top[:, None, None]) & (rows[None] < (top + box_h)[:, None, None])
            & (cols[None] >= left[:, None, None]) & (cols[None] < (left + box_w)[:, None, None]))
  active = tf.range(MAX_BOXES) < count
  inside = inside & active[:, None, None]
  return tf.cast(tf.reduce_any(inside, axis=0), tf.float32)[:, :, None]


def free_form(seed, height, width):
  """Brush strokes covering 10-40% of the image (see the module docstring)."""
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
  height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  short = tf.minimum(height_f, width_f)
  shape = [STROKES, SEGMENTS_PER_STROKE]
  start_row = _uniform([STROKES, 1], seeds[0], 0.0, 1.0) * (height_f - 1.0)
  start_col = _uniform([STROKES, 1], seeds[1], 0.0, 1.0) * (width_f - 1.0)
  angle = _uniform(shape, seeds[2], 0.0, 2.0 * math.pi)
  length = _uniform(shape, seeds[3], SEGMENT_LENGTH[0], SEGMENT_LENGTH[1]) * short
  # Each stroke is a random walk; a vertex that leaves the image is clipped
  # to its border (as DeepFill's generator does).
  walk_row = start_row + tf.cumsum(length * tf.sin(angle), axis=1)
  walk_col = start_col + tf.cumsum(length * tf.cos(angle), axis=1)
  vertex_row = tf.clip_by_value(tf.concat([start_row, walk_row], 1), 0.0, height_f - 1.0)
  vertex_col = tf.clip_by_value(tf.concat([start_col, walk_col], 1), 0.0, width_f - 1.0)
  radius = _uniform(shape, seeds[4], BRUSH_WIDTH[0], BRUSH_WIDTH[1]) * short / 2.0
  target = _uniform([], seeds[5], FREE_FORM_TARGET[0], FREE_FORM_TARGET[1])
  rows = tf.cast(tf.range(height), tf.float32)[None, :, None]  # [1, H, 1]
  cols = tf.cast(tf.range(width), tf.float32)[None, None, :]  # [1, 1, W]

  def painted_by(stroke):
    """bool [SEGMENTS_PER_STROKE, H, W]: the pixels each segment of `stroke` paints,
    those within the brush radius of the segment (a round brush dragged along it).
    Written with separable [N, H, 1] and [N, 1, W] terms to keep the passes over
    [N, H, W] few: this is most of the cost of a free-form mask."""
    row0, col0 = vertex_row[stroke, :-1], vertex_col[stroke, :-1]
    d_row, d_col = vertex_row[stroke, 1:] - row0, vertex_col[stroke, 1:] - col0
    length2 = tf.maximum(d_row**2 + d_col**2, 1e-6)
    rel_row = rows - row0[:, None, None]  # [N, H, 1]
    rel_col = cols - col0[:, None, None]  # [N, 1, W]
    dot = rel_row * d_row[:, None, None] + rel_col * d_col[:, None, None]
    t = tf.clip_by_value(dot / length2[:, None, None], 0.0, 1.0)
    # |rel - t d|^2 = |rel|^2 - 2 t (rel . d) + t^2 |d|^2
    distance2 = rel_row**2 + rel_col**2 + t * (t * length2[:, None, None] - 2.0 * dot)
    return distance2 <= (radius[stroke]**2)[:, None, None]

  # Strokes are drawn one after another; inside the stroke that reaches the
  # target share, the segment that reaches it is the last one drawn.
  def draw(stroke, union, done):
    del done
    cumulative = tf.logical_or(union[None], tf.cast(
        tf.cumsum(tf.cast(painted_by(stroke), tf.int32), axis=0), tf.bool))
    area = tf.reduce_mean(tf.cast(cumulative, tf.float32), axis=[1, 2])
    reached = area >= target
    last = tf.where(tf.reduce_any(reached), tf.argmax(tf.cast(reached, tf.int32)),
                    tf.cast(SEGMENTS_PER_STROKE - 1, tf.int64))
    return stroke + 1, cumulative[last], tf.reduce_any(reached)

  _, union, _ = tf.while_loop(
      lambda stroke, union, done: tf.logical_and(stroke < STROKES, tf.logical_not(done)),
      draw, (tf.constant(0), tf.zeros([height, width], tf.bool), tf.constant(False)))
  return tf.cast(union, tf.float32)[:, :, None]


def _choose(seed, probabilities, candidates):
  """Draws one of `candidates` (callables returning masks) with `probabilities`."""
  probabilities = tf.constant(probabilities, tf.float32)
  cumulative = tf.cumsum(probabilities / tf.reduce_sum(probabilities))
  u = _uniform([], seed, 0.0, 1.0)
  index = tf.minimum(tf.reduce_sum(tf.cast(cumulative <= u, tf.int32)), len(candidates) - 1)
  return tf.switch_case(index, candidates)


def mask(family: str, seed, height, width, cfg: DataConfig):
  """One image's mask of `family` (see `FAMILIES`), float32 [H, W, 1], 1 in the hole."""
  if family not in FAMILIES:
    raise ValueError(f"Unknown mask family {family!r}: expected one of {FAMILIES}.")
  seed = tf.cast(seed, tf.int64)
  if family == "centre":
    return centre(height, width, cfg.hole_size)
  if family == "box":
    return box(seed, height, width)
  if family == "free_form":
    return free_form(seed, height, width)
  choice_seed, shape_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  free = [lambda: box(shape_seed, height, width), lambda: free_form(shape_seed, height, width)]
  if family == "free":
    return _choose(choice_seed, cfg.mask_mix[1:], free)
  return _choose(choice_seed, cfg.mask_mix,
                 [lambda: centre(height, width, cfg.hole_size)] + free)


def masks(family: str, seeds, height, width, cfg: DataConfig):
  """One mask per seed: seeds int [B, 2] -> float32 [B, H, W, 1]."""
  if family == "centre":  # No randomness: one mask, tiled.
    return tf.tile(centre(height, width, cfg.hole_size)[None], [tf.shape(seeds)[0], 1, 1, 1])
  return tf.map_fn(lambda s: mask(family, s, height, width, cfg), tf.cast(seeds, tf.int64),
                   fn_output_signature=tf.TensorSpec([None, None, 1], tf.float32))
