"""The deep cascade: generator then restorer (paper Sec. 3.1, Fig. 2).

`forward` is the one place that says how a corrupted image becomes the
cascade's outputs: the training objectives (`training/objectives.py`, both
backends), validation, and `build_cascade` (which evaluation, export,
restore and the benchmarks run) all call it. `build_cascade` wires an
existing generator and restorer into one model that shares their layers
(and weights): corrupted -> G -> R, returning both the intermediate
inpainted image G(x) and the final R(G(x)).

Beyond the paper, two options take the hole mask (docs/architecture.md,
"Masks"): a generator with the mask as its 4th input channel
(`generator.mask_channel`), and the composite m * G(x) + (1 - m) * x
(`generator.composite`), which keeps the known pixels exactly. At
inference only, `self_ensemble` = n runs each network on n symmetries of
its input (the first n of `data.augment`'s eight) and averages the
outputs mapped back: n times the compute for a little more PSNR
(docs/results.md, "Self-ensemble").
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from cascade_tf.data import appliers
from cascade_tf.data import augment

# Values of `self_ensemble`: how many of the square's symmetries each network sees.
SELF_ENSEMBLE_SIZES = (1, 2, 4, 8)


def uses_mask(generator: keras.Model | None, composite: bool = False) -> bool:
  """Whether `forward` needs the hole mask: a mask-channel generator, or the composite."""
  return generator is not None and (composite or generator.input_shape[-1] == 4)


def check_self_ensemble(n: int, flag: str = "--self_ensemble") -> int:
  """`n` if it is one of SELF_ENSEMBLE_SIZES; ValueError naming `flag` otherwise."""
  if n not in SELF_ENSEMBLE_SIZES:
    raise ValueError(f"{flag}={n}: expected one of {SELF_ENSEMBLE_SIZES} (symmetries of the "
                     "image each network sees; 1 = none).")
  return n


def _ensemble(network, images, n: int):
  """The mean over k < n of transform k undone on network(transform k of images).

  `images` is [B, H, W, C] of any H and W (a quarter turn swaps them; the
  networks are fully convolutional). n = 1 is the plain call.
  """
  if n == 1:
    return network(images)
  outputs = [augment.dihedral_ops(network(augment.dihedral_ops(images, k)), k, inverse=True)
             for k in range(n)]
  return ops.divide(functools.reduce(ops.add, outputs), float(n))


def forward(corrupted, generator: keras.Model | None = None,
            restorer: keras.Model | None = None, *, mask=None, composite: bool = False,
            training=None, self_ensemble: int = 1) -> dict:
  """Runs the cascade's networks that are given on `corrupted`.

  Args:
    corrupted: [B, H, W, 3] on the networks' [-1, 1] scale (a tensor or a
      keras.Input), holes already filled.
    generator: G, or None (the restorer alone: stage `dd`).
    restorer: R, or None (the generator alone: stages `pretrain`, `gan`).
    mask: [B, H, W, 1], 1 in the hole; needed when the generator takes it
      as a 4th channel (`generator.mask_channel`) or `composite` is on, and
      ignored otherwise.
    composite: G's output is m * G(x) + (1 - m) * x, so that the known
      pixels reach the restorer (and the `inpainted` output) untouched.
    training: passed to the networks (batch-norm mode).
    self_ensemble: at inference, run each network on this many symmetries
      of its input and average the outputs mapped back (SELF_ENSEMBLE_SIZES;
      1: once, as trained). The composite and the restorer take the
      generator's averaged output.

  Returns:
    {"inpainted": G(x)} and/or {"restored": R(G(x)) or R(x)}, [-1, 1], not
    clipped; `final_output` picks the last.
  """
  if generator is None and restorer is None:
    raise ValueError("forward needs a generator, a restorer or both.")
  if mask is None and uses_mask(generator, composite):
    raise ValueError("forward: this generator (mask channel) or the composite needs the hole "
                     "mask (mask=...).")
  check_self_ensemble(self_ensemble, "self_ensemble")
  outputs = {}
  images = corrupted
  if generator is not None:
    generator_input = images
    if generator.input_shape[-1] == 4:
      generator_input = ops.concatenate([images, ops.cast(mask, images.dtype)], axis=-1)
    images = _ensemble(lambda x: generator(x, training=training), generator_input,
                       self_ensemble)
    if composite:
      images = appliers.composite(images, corrupted, mask)
    outputs["inpainted"] = images
  if restorer is not None:
    outputs["restored"] = _ensemble(lambda x: restorer(x, training=training), images,
                                    self_ensemble)
  return outputs


def final_output(outputs: dict):
  """The cascade's last output among `forward`'s: R's when it ran, otherwise G's."""
  return outputs["restored"] if "restored" in outputs else outputs["inpainted"]


def cascade_inputs(corrupted, mask=None) -> dict:
  """The input dict of a `build_cascade` model; without a mask nothing is a hole (zeros)."""
  corrupted = ops.convert_to_tensor(corrupted)
  if mask is None:
    mask = ops.zeros_like(corrupted[..., :1])
  return {"corrupted": corrupted, "mask": ops.cast(mask, corrupted.dtype)}


def build_cascade(generator: keras.Model, restorer: keras.Model, *, composite: bool = False,
                  self_ensemble: int = 1, name: str = "cascade") -> keras.Model:
  """Chains `generator` and `restorer` into one model.

  Args:
    generator: from `build_generator`, [B, H, W, 3 or 4] -> [B, H, W, 3].
    restorer: from `build_restorer`, [B, H, W, 3] -> [B, H, W, 3].
    composite: composite G's output with its input outside the hole
      (`forward`); the config's `generator.composite`.
    self_ensemble: symmetries of the input each network sees (`forward`).
    name: the model's name.

  Returns:
    A functional keras.Model mapping {"corrupted": [B, H, W, 3] in [-1, 1],
    "mask": [B, H, W, 1], 1 in the hole} to {"inpainted": G(x), "restored":
    R(G(x))}, both float32 [B, H, W, 3] on the [-1, 1] scale (not clipped).
    Every cascade takes the mask, so every caller passes one; a generator
    without the mask channel and without the composite ignores it. The two
    networks are nested as layers, so their weights are shared with the
    models passed in.

  Raises:
    ValueError: if the two networks do not take and give images of
      compatible sizes and channels.
  """
  gen_in, gen_out = tuple(generator.input_shape), tuple(generator.output_shape)
  res_in = tuple(restorer.input_shape)
  if len(gen_in) != 4 or gen_in[-1] not in (3, 4) or len(res_in) != 4 or res_in[-1] != 3:
    raise ValueError(f"build_cascade expects image-to-image models with 3 channels (the "
                     f"generator: 3, or 4 with the mask); got generator input {gen_in} and "
                     f"restorer input {res_in}.")
  for axis in (1, 2):
    if None not in (gen_out[axis], res_in[axis]) and gen_out[axis] != res_in[axis]:
      raise ValueError(f"The generator's output {gen_out} does not fit the restorer's input "
                       f"{res_in}: build both for the same image_size.")
  inputs = {"corrupted": keras.Input(shape=gen_in[1:3] + (3,), name="corrupted"),
            "mask": keras.Input(shape=gen_in[1:3] + (1,), name="mask")}
  return keras.Model(inputs, forward(inputs["corrupted"], generator, restorer,
                                     mask=inputs["mask"], composite=composite,
                                     self_ensemble=self_ensemble), name=name)
