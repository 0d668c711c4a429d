"""The deep cascade: generator then restorer (paper Sec. 3.1, Fig. 2).

`build_cascade` wires an existing generator and restorer into one model
that shares their layers (and weights): corrupted -> G -> R. It returns both
the intermediate inpainted image G(x) and the final R(G(x)), so that the
joint stage (Sec. 3.4, last step) can back-propagate the restorer's loss
through R into G and still monitor G's own output.
"""

from __future__ import annotations

import keras


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
  inpainted = generator(inputs)
  restored = restorer(inpainted)
  return keras.Model(inputs, {"inpainted": inpainted, "restored": restored}, name=name)
