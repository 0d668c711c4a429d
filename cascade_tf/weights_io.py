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


def load_weights(model: keras.Model, directory: str, name: str) -> dict:
  """Assigns the weights saved by `save_weights` to `model`; returns the manifest.

  Raises:
    FileNotFoundError: no manifest or a missing shard (named).
    ValueError: a different number of variables, or a variable whose path or
      shape differs (the first mismatch is named).
  """
  manifest = read_manifest(directory, name)
  saved = manifest["variables"]
  variables = model.weights
  where = manifest_path(directory, name)
  if len(saved) != len(variables):
    raise ValueError(f"{where}: {len(saved)} variables saved, but model '{model.name}' has "
                     f"{len(variables)}: the weights come from a different configuration.")
  for entry, variable in zip(saved, variables):
    if (_path_tail(entry["path"]) != _path_tail(variable.path)
        or tuple(entry["shape"]) != tuple(variable.shape)):
      raise ValueError(f"{where}: saved variable {entry['path']} {tuple(entry['shape'])} does "
                       f"not match the model's {variable.path} {tuple(variable.shape)}: the "
                       "weights come from a different configuration.")
  arrays: dict[int, np.ndarray] = {}
  for shard in manifest["shards"]:
    path = os.path.join(directory, shard["file"])
    if not os.path.exists(path):
      raise FileNotFoundError(f"{where} lists shard {path}, which is missing.")
    with np.load(path) as data:
      for index in shard["indices"]:
        arrays[index] = data[f"w{index:05d}"]
  if sorted(arrays) != list(range(len(variables))):
    raise ValueError(f"{where}: the shards do not hold every variable.")
  for index, variable in enumerate(variables):
    variable.assign(arrays[index].astype(keras.backend.standardize_dtype(variable.dtype)))
  return manifest
