"""The deep cascade: generator then restorer (paper Sec. 3.1, Fig. 2).

`forward` is the one place that says how a corrupted image becomes the
cascade's outputs: the training objectives (`training/objectives.py`, both
backends), validation, and `build_cascade` (which evaluation, export,
restore and the benchmarks run) all call it. `build_cascade` wires an
existing generator and restorer into one model that shares their layers
(and weights): corrupted -> G -> R, returning both the intermediate
inpainted image G(x) and the final R(G(x)).
"""

from __future__ import annotations

import keras


def forward(corrupted, generator: keras.Model | None = None,
            restorer: keras.Model | None = None, *, training=None) -> dict:
  """Runs the cascade's networks that are given on `corrupted`.

  Args:
    corrupted: [B, H, W, 3] on the networks' [-1, 1] scale (a tensor or a
      keras.Input).
    generator: G, or None (the restorer alone: stage `dd`).
    restorer: R, or None (the generator alone: stages `pretrain`, `gan`).
    training: passed to the networks (batch-norm mode).

  Returns:
    {"inpainted": G(x)} and/or {"restored": R(G(x)) or R(x)}, [-1, 1], not
    clipped; `final_output` picks the last.
  """
  if generator is None and restorer is None:
    raise ValueError("forward needs a generator, a restorer or both.")
  outputs = {}
  images = corrupted
  if generator is not None:
    images = outputs["inpainted"] = generator(images, training=training)
  if restorer is not None:
    outputs["restored"] = restorer(images, training=training)
  return outputs


def final_output(outputs: dict):
  """The cascade's last output among `forward`'s: R's when it ran, otherwise G's."""
  return outputs["restored"] if "restored" in outputs else outputs["inpainted"]


def build_cascade(generator: keras.Model, restorer: keras.Model,
                  name: str = "cascade") -> keras.Model:
  """Chains `generator` and `restorer` into one model.

  Args:
    generator: from `build_generator`, [B, H, W, 3] -> [B, H, W, 3].
    restorer: from `build_restorer`, [B, H, W, 3] -> [B, H, W, 3].
    name: the model's name.

  Returns:
    A functional keras.Model mapping the corrupted image [B, H, W, 3] in
    [-1, 1] to {"inpainted": G(x), "restored": R(G(x))}, both float32
    [B, H, W, 3] on the [-1, 1] scale (not clipped). The two networks are
    nested as layers, so their weights are shared with the models passed in.

  Raises:
    ValueError: if the two networks do not take and give 3-channel images
      of compatible sizes.
  """
  gen_in, gen_out = tuple(generator.input_shape), tuple(generator.output_shape)
  res_in = tuple(restorer.input_shape)
  if len(gen_in) != 4 or gen_in[-1] != 3 or len(res_in) != 4 or res_in[-1] != 3:
    raise ValueError(f"build_cascade expects image-to-image models with 3 channels; got "
                     f"generator input {gen_in} and restorer input {res_in}.")
  for axis in (1, 2):
    if None not in (gen_out[axis], res_in[axis]) and gen_out[axis] != res_in[axis]:
      raise ValueError(f"The generator's output {gen_out} does not fit the restorer's input "
                       f"{res_in}: build both for the same image_size.")
  inputs = keras.Input(shape=gen_in[1:], name="corrupted")
  return keras.Model(inputs, forward(inputs, generator, restorer), name=name)
