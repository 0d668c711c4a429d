"""Network weights as numpy shards, to move trained networks between Keras backends.

`scripts/train_jax.py` trains the cascade's networks with Keras' JAX
backend on a machine without TensorFlow; `scripts/import_weights.py` turns
what it wrote into a workdir that `evaluate.py`, `export.py` and `restore.py`
read. In between, each network travels as

    <dir>/<name>.json                manifest: variable paths, shapes, dtypes, shards
    <dir>/<name>-<id>-00000.npz ...  the arrays of `model.weights`, in order,
                                     split into files of at most `max_bytes`

Saving is atomic: the shards of a save get a name of their own (`<id>`,
random per save), the manifest is written to a temporary file and renamed
over the old one last, and only then are the previous save's shards
removed. A save that fails midway (a full disk, a crash) leaves the
previous manifest and its shards as they were, and removes what it wrote.

Every variable (trainable or not: batch-norm moving statistics too) is
saved, in `model.weights` order, which is the order the layers created them
and the same on every backend for the same architecture. `load_weights`
checks the variable paths and shapes against the model before it assigns
anything, so a manifest from another configuration fails with a message
that names the first mismatch.

`load_weights(..., grow=True)` and `assign_grown` load saved weights into
a grown version of the network (new layers, wider channels) such that it
computes what the saved one did: `train.py --init_from=pretrained` and
`scripts/train_jax.py --init_dir` share them.

The arrays may be stored in a narrower dtype (`store_dtype="float16"`) to
fit a transfer limit; they are cast back to the model's dtypes on loading.

This module needs numpy and Keras only, no TensorFlow.
"""

from __future__ import annotations

import json
import os
import uuid

import keras
import numpy as np

MANIFEST_VERSION = 1
DEFAULT_MAX_BYTES = 15 * 2**20  # One shard: under a 16 MiB per-file transfer limit.


def manifest_path(directory: str, name: str) -> str:
  return os.path.join(directory, f"{name}.json")


def save_weights(model: keras.Model, directory: str, name: str, *,
                 store_dtype: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
  """Writes `model`'s variables as `<name>-<id>-NNNNN.npz` shards plus `<name>.json`.

  Args:
    model: the network.
    directory: output folder (created).
    name: file stem, e.g. "generator".
    store_dtype: dtype the floating arrays are stored in (None: their own).
    max_bytes: largest shard; one array larger than this gets a shard of its own.

  Returns:
    The paths written, the manifest last (it is written after the shards, so
    a manifest on disk always describes complete shards).

  Raises:
    OSError: the write failed (e.g. the disk is full); the previous save of
      `name` in `directory`, if any, is left intact.
  """
  if max_bytes <= 0:
    raise ValueError(f"save_weights: max_bytes={max_bytes} must be > 0.")
  os.makedirs(directory, exist_ok=True)
  variables = model.weights
  arrays = []
  for variable in variables:
    array = np.asarray(keras.ops.convert_to_numpy(variable.value))
    if store_dtype is not None and np.issubdtype(array.dtype, np.floating):
      array = array.astype(store_dtype)
    arrays.append(array)

  shards: list[list[int]] = [[]]
  size = 0
  for index, array in enumerate(arrays):
    if shards[-1] and size + array.nbytes > max_bytes:
      shards.append([])
      size = 0
    shards[-1].append(index)
    size += array.nbytes

  previous = _previous_shards(directory, name)
  save_id = uuid.uuid4().hex[:8]
  written = []
  try:
    shard_files = []
    for number, indices in enumerate(shards):
      file_name = f"{name}-{save_id}-{number:05d}.npz"
      path = os.path.join(directory, file_name)
      written.append(path)
      with open(path, "wb") as f:
        np.savez(f, **{f"w{i:05d}": arrays[i] for i in indices})
        f.flush()
        os.fsync(f.fileno())
      shard_files.append({"file": file_name, "indices": indices})
    manifest = {
        "version": MANIFEST_VERSION,
        "name": name,
        "model": model.name,
        "backend": keras.backend.backend(),
        "num_params": int(model.count_params()),
        "store_dtype": store_dtype,
        "variables": [{"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)}
                      for v in variables],
        "shards": shard_files,
    }
    path = manifest_path(directory, name)
    temporary = f"{path}.tmp-{save_id}"
    written.append(temporary)
    with open(temporary, "w") as f:
      json.dump(manifest, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)  # The moment the new save takes over.
  except BaseException:
    for leftover in written:
      if os.path.exists(leftover):
        os.remove(leftover)
    raise
  for old in previous - {entry["file"] for entry in shard_files}:
    old_path = os.path.join(directory, old)
    if os.path.exists(old_path):
      os.remove(old_path)
  return [os.path.join(directory, entry["file"]) for entry in shard_files] + [path]


def _previous_shards(directory: str, name: str) -> set[str]:
  """The shard files the current manifest of `name` lists (none without a readable one)."""
  try:
    with open(manifest_path(directory, name)) as f:
      return {entry["file"] for entry in json.load(f).get("shards", [])}
  except (OSError, ValueError, KeyError, TypeError):
    return set()


def read_manifest(directory: str, name: str) -> dict:
  path = manifest_path(directory, name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No weights manifest {path}: expected the output of "
                            f"weights_io.save_weights (scripts/train_jax.py) for '{name}'.")
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("version") != MANIFEST_VERSION:
    raise ValueError(f"{path}: manifest version {manifest.get('version')!r}, expected "
                     f"{MANIFEST_VERSION}.")
  return manifest


def _path_tail(path: str) -> str:
  """A variable path without the model's own name (it differs with the name given)."""
  return path.split("/", 1)[1] if "/" in path else path


def read_arrays(directory: str, name: str) -> tuple[dict, list[np.ndarray]]:
  """The manifest of `name` in `directory` and its arrays, in saved order, as stored.

  Raises:
    FileNotFoundError: no manifest or a missing shard (named).
    ValueError: shards that do not hold every variable.
  """
  manifest = read_manifest(directory, name)
  where = manifest_path(directory, name)
  arrays: dict[int, np.ndarray] = {}
  for shard in manifest["shards"]:
    path = os.path.join(directory, shard["file"])
    if not os.path.exists(path):
      raise FileNotFoundError(f"{where} lists shard {path}, which is missing.")
    with np.load(path) as data:
      for index in shard["indices"]:
        arrays[index] = data[f"w{index:05d}"]
  if sorted(arrays) != list(range(len(manifest["variables"]))):
    raise ValueError(f"{where}: the shards do not hold every variable.")
  return manifest, [arrays[i] for i in range(len(arrays))]


def load_weights(model: keras.Model, directory: str, name: str, *,
                 grow: bool = False) -> dict:
  """Assigns the weights saved by `save_weights` to `model`; returns the manifest.

  With `grow`, `model` may be a grown version of the saved network (new
  layers, wider channels: `assign_grown`); the manifest then gets the key
  "grown" with the layers that are new or wider.

  Raises:
    FileNotFoundError: no manifest or a missing shard (named).
    ValueError: a different number of variables, or a variable whose path or
      shape differs (the first mismatch is named); with `grow`, saved weights
      that have no place in `model`.
  """
  manifest, arrays = read_arrays(directory, name)
  saved = manifest["variables"]
  variables = model.weights
  where = manifest_path(directory, name)
  if grow:
    grown = assign_grown(model, {e["path"]: a for e, a in zip(saved, arrays)})
    if grown is None:
      raise ValueError(f"{where}: the saved {name} does not fit model '{model.name}', nor "
                       "does it grow into it (only new layers and wider channels can be "
                       "added): the weights come from a different configuration.")
    manifest["grown"] = grown
    return manifest
  if len(saved) != len(variables):
    raise ValueError(f"{where}: {len(saved)} variables saved, but model '{model.name}' has "
                     f"{len(variables)}: the weights come from a different configuration.")
  for entry, variable in zip(saved, variables):
    if (_path_tail(entry["path"]) != _path_tail(variable.path)
        or tuple(entry["shape"]) != tuple(variable.shape)):
      raise ValueError(f"{where}: saved variable {entry['path']} {tuple(entry['shape'])} does "
                       f"not match the model's {variable.path} {tuple(variable.shape)}: the "
                       "weights come from a different configuration.")
  for array, variable in zip(arrays, variables):
    variable.assign(array.astype(keras.backend.standardize_dtype(variable.dtype)))
  return manifest


def assign_grown(target: keras.Model, source: dict[str, np.ndarray]) -> list[str] | None:
  """Copies the arrays of `source` (variable path -> array) into `target`'s variables.

  A network may grow, not shrink or change: `target` may have layers that
  `source` lacks (generator.decoder_res_blocks) and wider variables
  (generator.bottleneck_filters). A wider variable gets `source`'s values
  in its leading slice; in a wider convolution kernel the weights from new
  input channels to old output channels are zeroed, so the old channels
  compute what they did and `target`'s output is `source`'s until trained,
  while every other new weight keeps its initialiser (the new channels
  differ from each other and learn). Leading slices correspond because this
  project's networks mix channels only in convolutions and channel-wise
  sums (no concatenation of grown tensors).

  Paths are `layer/variable`, as Keras names them. Returns the layers of
  `target` that `source` lacks or that grew wider (empty when the two are
  alike), or None, assigning nothing, when an array of `source` has no
  place in `target`: a missing variable, another rank, a narrower axis, or a
  wider kernel of a layer other than Conv2D and Conv2DTranspose.
  """
  by_path = {v.path: v for v in target.weights}
  plans = []
  for path, value in source.items():
    slot = by_path.get(path)
    if slot is None or len(slot.shape) != value.ndim or any(
        new < old for new, old in zip(slot.shape, value.shape)):
      return None
    cut = None  # (input axis, output axis) of a wider kernel: zero new-in -> old-out.
    if tuple(slot.shape) != value.shape and value.ndim == 4:
      layer = target.get_layer(path.split("/")[0])
      if isinstance(layer, keras.layers.Conv2DTranspose):
        cut = (3, 2)  # Keras stores a transposed kernel as [h, w, out, in].
      elif isinstance(layer, keras.layers.Conv2D):
        cut = (2, 3)
      else:
        return None
    plans.append((slot, value, cut))
  grown = set()
  for slot, value, cut in plans:
    dtype = keras.backend.standardize_dtype(slot.dtype)
    if tuple(slot.shape) == value.shape:
      slot.assign(value.astype(dtype))
      continue
    grown.add(slot.path.split("/")[0])
    merged = np.array(keras.ops.convert_to_numpy(slot.value))
    merged[tuple(slice(0, n) for n in value.shape)] = value
    if cut is not None:
      index = [slice(None)] * 4
      index[cut[0]] = slice(value.shape[cut[0]], None)
      index[cut[1]] = slice(0, value.shape[cut[1]])
      merged[tuple(index)] = 0.0
    slot.assign(merged.astype(dtype))
  known = {path for path in source}
  return sorted(grown | {v.path.split("/")[0] for v in target.weights
                         if v.path not in known})
