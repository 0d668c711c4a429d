"""The cascade that ships with the project: `--model=pretrained`, and the default.

The folder of this package holds one trained cascade (MODEL_CARD.md says
how it was trained and what it scores):

    config.json                    the training config (preset `photo`)
    generator.json, generator-*.npz  weights_io manifest and float16 shards
    restorer.json, restorer-*.npz
    SHA256SUMS                     one "<sha256>  <file>" line per file above
    MODEL_CARD.md                  (not checksummed: documentation)

`load()` checks every file against SHA256SUMS before it reads any weight
(a mismatch is a ValueError that names the file and both hashes), rebuilds
the networks from config.json and loads the weights; `restore.py`,
`export.py`, `evaluate.py` and `train.py --init_from=pretrained` all go
through it. `ship(workdir)` (scripts/ship_pretrained.py) writes the folder
from a training workdir.

This module imports TensorFlow only through `cascade_tf.inference`, when
`ship` reads a workdir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

from cascade_tf import config as config_lib
from cascade_tf import weights_io

NAME = "pretrained"  # What --model and --init_from accept.
DIRECTORY = os.path.dirname(os.path.abspath(__file__))
SUMS_FILE = "SHA256SUMS"
CONFIG_FILE = "config.json"
NETWORKS = ("generator", "restorer")
STORE_DTYPE = "float16"


@dataclasses.dataclass
class Pretrained:
  """The shipped networks as trained (batch norm not folded) and their config."""

  config: config_lib.Config
  generator: object  # keras.Model
  restorer: object  # keras.Model
  directory: str


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def read_sums(directory: str = DIRECTORY) -> dict[str, str]:
  """{file name: sha256} of SHA256SUMS; FileNotFoundError naming it if it is missing."""
  path = os.path.join(directory, SUMS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} is missing: the pretrained cascade has no checksum manifest. Restore the "
        "folder from git (git checkout -- cascade_tf/pretrained) or pass --model/--workdir.")
  sums = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 2 or len(parts[0]) != 64:
        raise ValueError(f"{path}, line {number}: expected '<sha256>  <file>', got {line!r}.")
      sums[parts[1]] = parts[0]
  return sums


def verify(directory: str = DIRECTORY) -> dict[str, str]:
  """Checks every file SHA256SUMS lists, and that the weights' files are all listed.

  Returns:
    {file name: sha256}.

  Raises:
    FileNotFoundError: SHA256SUMS or a listed file is missing (named).
    ValueError: a file's hash differs (the file and both hashes named), or a
      weights file or config.json is not listed.
  """
  sums = read_sums(directory)
  needed = {CONFIG_FILE} | {f"{name}.json" for name in NETWORKS}
  for name in NETWORKS:
    manifest_file = os.path.join(directory, f"{name}.json")
    if os.path.exists(manifest_file):
      with open(manifest_file) as f:
        needed |= {entry["file"] for entry in json.load(f).get("shards", [])}
  unlisted = sorted(needed - set(sums))
  if unlisted:
    raise ValueError(f"{os.path.join(directory, SUMS_FILE)} does not list {', '.join(unlisted)}: "
                     "the pretrained cascade's files cannot be checked.")
  for name, expected in sorted(sums.items()):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} is missing (listed in {SUMS_FILE}).")
    actual = sha256(path)
    if actual != expected:
      raise ValueError(f"{path} is damaged or was changed: its SHA-256 is {actual}, "
                       f"{SUMS_FILE} expects {expected}.")
  return sums


def available(directory: str = DIRECTORY) -> bool:
  """Whether the folder holds a shipped cascade (its SHA256SUMS exists)."""
  return os.path.exists(os.path.join(directory, SUMS_FILE))


def load_config(directory: str = DIRECTORY) -> config_lib.Config:
  with open(os.path.join(directory, CONFIG_FILE)) as f:
    return config_lib.from_json(f.read())


def load(directory: str = DIRECTORY) -> Pretrained:
  """Verifies the checksums, then rebuilds the shipped networks with their weights."""
  from cascade_tf.models import generator as generator_lib  # pylint: disable=g-import-not-at-top
  from cascade_tf.models import restorer as restorer_lib  # pylint: disable=g-import-not-at-top
  verify(directory)
  cfg = load_config(directory)
  generator = generator_lib.build_generator(cfg.generator, None)
  restorer = restorer_lib.build_restorer(cfg.restorer, None)
  weights_io.load_weights(generator, directory, "generator")
  weights_io.load_weights(restorer, directory, "restorer")
  return Pretrained(cfg, generator, restorer, directory)


def ship(workdir: str, directory: str = DIRECTORY) -> dict[str, str]:
  """Writes the cascade of `workdir` (its most trained networks) as the shipped model.

  The networks are stored unfolded (batch norm kept, so they can be
  trained further) in float16; config.json is the workdir's. Everything is
  written into a temporary folder first and moved in file by file, then
  SHA256SUMS last; weights of a previous ship are removed. MODEL_CARD.md
  is written by hand and not listed (editing it does not stop loading).

  Returns:
    {file name: sha256} as written to SHA256SUMS.
  """
  from cascade_tf import inference  # pylint: disable=g-import-not-at-top
  loaded = inference.load_workdir_cascade(workdir, fold_batch_norm=False)
  os.makedirs(directory, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".ship-", dir=directory)
  try:
    files = []
    for name in NETWORKS:
      written = weights_io.save_weights(getattr(loaded, name), staging, name,
                                        store_dtype=STORE_DTYPE)
      files += [os.path.basename(p) for p in written]
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      f.write(config_lib.to_json(loaded.config))
    files.append(CONFIG_FILE)
    sums = {name: sha256(os.path.join(staging, name)) for name in sorted(files)}
    for old in os.listdir(directory):
      if old.endswith(".npz") and old not in sums:
        os.remove(os.path.join(directory, old))
    for name in files:
      os.replace(os.path.join(staging, name), os.path.join(directory, name))
    temporary = os.path.join(directory, SUMS_FILE + ".tmp")
    with open(temporary, "w") as f:
      f.writelines(f"{digest}  {name}\n" for name, digest in sums.items())
    os.replace(temporary, os.path.join(directory, SUMS_FILE))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return sums
