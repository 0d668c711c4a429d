"""The Keras JAX-backend trainer (scripts/train_jax.py) and its weight transfer.

The JAX side runs in subprocesses (tests/jax_worker.py, the scripts
themselves): this process runs Keras on TensorFlow.
"""

import json
import os
from pathlib import Path
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import weights_io
from cascade_tf.data import corruptions
from cascade_tf.training import imported
from cascade_tf.training import loop
from cascade_tf.training import steps as steps_lib

ROOT = Path(__file__).resolve().parents[1]


# The tiny preset with fewer layers: compiling the updates (XLA in JAX, graphs
# in TensorFlow) takes most of these tests' time, and it grows with the layers.
SMALL = {"loss.lambda_per": 0.0, "generator.num_levels": 2, "generator.num_res_blocks": 1,
         "restorer.num_encode": 2, "restorer.num_decode": 2, "critic.convs_per_group": "1,1"}


def _tiny():
  return config_lib.with_overrides(config_lib.tiny(), SMALL)


def _run(args, **kwargs):
  env = {**os.environ, "KERAS_BACKEND": "jax"}
  proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, **kwargs)
  return proc


def _weights(model):
  return [np.array(v.numpy()) for v in model.weights]


def test_weights_io_round_trip_shards_and_errors(tmp_path):
  cfg = _tiny()
  keras.utils.set_random_seed(1)
  [generator] = loop.build_networks(cfg, ["generator"]).values()
  paths = weights_io.save_weights(generator, str(tmp_path / "w"), "generator", max_bytes=4096)
  assert len(paths) > 3 and paths[-1].endswith("generator.json")  # Several shards, manifest last.
  manifest = weights_io.read_manifest(str(tmp_path / "w"), "generator")
  sizes = [4 * int(np.prod(v["shape"])) for v in manifest["variables"]]
  for shard in manifest["shards"]:  # At most max_bytes, or one larger array alone.
    assert len(shard["indices"]) == 1 or sum(sizes[i] for i in shard["indices"]) <= 4096

  keras.utils.set_random_seed(2)
  [other] = loop.build_networks(cfg, ["generator"]).values()
  assert any(not np.array_equal(a, b) for a, b in zip(_weights(generator), _weights(other)))
  manifest = weights_io.load_weights(other, str(tmp_path / "w"), "generator")
  assert manifest["num_params"] == generator.count_params()
  for a, b in zip(_weights(generator), _weights(other)):
    np.testing.assert_array_equal(a, b)  # Batch-norm statistics included.

  weights_io.save_weights(generator, str(tmp_path / "h"), "generator", store_dtype="float16")
  weights_io.load_weights(other, str(tmp_path / "h"), "generator")
  for a, b in zip(_weights(generator), _weights(other)):
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)

  [restorer] = loop.build_networks(cfg, ["restorer"]).values()
  with pytest.raises(ValueError, match=r"generator\.json.*different configuration"):
    weights_io.load_weights(restorer, str(tmp_path / "w"), "generator")
  with pytest.raises(FileNotFoundError, match="restorer.json"):
    weights_io.load_weights(restorer, str(tmp_path / "w"), "restorer")
  os.remove(tmp_path / "w" / "generator-00001.npz")
  with pytest.raises(FileNotFoundError, match="generator-00001.npz"):
    weights_io.load_weights(other, str(tmp_path / "w"), "generator")


def test_jax_corruptions_match_tensorflow(tmp_path):
  rng = np.random.default_rng(0)
  clean = rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32")
  kernel = corruptions.motion_kernel(tf.constant(7.0), tf.constant(0.7), 15).numpy()
  np.savez(tmp_path / "clean.npz", clean=clean, kernel=kernel)
  proc = _run([ROOT / "tests" / "jax_worker.py", "corrupt", tmp_path])
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(tmp_path / "corrupted.npz") as out:
    jax_out = {k: out[k] for k in out.files}

  cfg = config_lib.tiny().data
  blurred = tf.clip_by_value(corruptions.blur(clean, np.stack([kernel] * 2)), 0.0, 1.0).numpy()
  np.testing.assert_allclose(jax_out["restore"], blurred, atol=2e-5)
  holed, _ = corruptions.apply_hole(blurred, cfg.hole_size, cfg.hole_fill)
  np.testing.assert_allclose(jax_out["joint"], holed.numpy(), atol=2e-5)
  holed_clean, _ = corruptions.apply_hole(clean, cfg.hole_size, cfg.hole_fill)
  np.testing.assert_array_equal(jax_out["inpaint"], holed_clean.numpy())


def test_jax_updates_match_tensorflow_updates(tmp_path):
  """One critic and one joint update, from the same weights and batch, on both backends."""
  cfg = _tiny()
  keras.utils.set_random_seed(3)
  nets = loop.build_networks(cfg, ["generator", "restorer", "critic"])
  for name, net in nets.items():
    weights_io.save_weights(net, str(tmp_path / "init"), name)
  (tmp_path / "config.json").write_text(config_lib.to_json(cfg))
  rng = np.random.default_rng(0)
  batch = {k: rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32") for k in ("corrupted", "clean")}
  np.savez(tmp_path / "batch.npz", x=batch["corrupted"] * 2 - 1, y=batch["clean"] * 2 - 1)
  proc = _run([ROOT / "tests" / "jax_worker.py", "updates", tmp_path])
  assert proc.returncode == 0, proc.stderr[-3000:]

  strategy = tf.distribute.get_strategy()
  optimizer = keras.optimizers.RMSprop(1e-3)
  critic_optimizer = keras.optimizers.RMSprop(1e-3)
  critic_step = steps_lib.make_critic_step(strategy, nets["generator"], nets["critic"],
                                           critic_optimizer, 4, cfg.train.clip)
  joint_step = steps_lib.make_joint_step(strategy, nets["generator"], nets["restorer"],
                                         nets["critic"], None, optimizer, 4, cfg.loss)
  tf_batch = {k: tf.constant(v) for k, v in batch.items()}
  tf_losses = {k: float(v) for k, v in {**critic_step(tf_batch), **joint_step(tf_batch)}.items()}

  jax_losses = json.loads((tmp_path / "losses.json").read_text())
  for key in ("critic_loss", "mse", "adversarial", "total", "mse_intermediate"):
    assert jax_losses[key] == pytest.approx(tf_losses[key], rel=1e-3, abs=1e-6), key
  for name, net in nets.items():
    [after] = loop.build_networks(cfg, [name]).values()
    weights_io.load_weights(after, str(tmp_path / "after"), name)
    initial = keras.models.clone_model(after)
    weights_io.load_weights(initial, str(tmp_path / "init"), name)
    moved = 0.0
    for tf_w, jax_w, init_w in zip(_weights(net), _weights(after), _weights(initial)):
      np.testing.assert_allclose(jax_w, tf_w, atol=1e-4, err_msg=name)
      moved = max(moved, float(np.abs(tf_w - init_w).max()))
    assert moved > 5e-4, name  # The update did change the weights (lr 1e-3).
  critic_max = max(float(np.abs(w).max()) for w in _weights(after))
  assert critic_max <= cfg.train.clip + 1e-7  # The last network loaded is the clipped critic.


def test_prepare_train_jax_import_end_to_end(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  from skimage import data as skimage_data
  from PIL import Image
  for name in ("astronaut", "coffee", "chelsea"):
    Image.fromarray(getattr(skimage_data, name)()).save(images / f"{name}.png")
  (images / "broken.jpg").write_bytes(b"not a jpeg")
  bundle = tmp_path / "bundle"
  proc = _run([ROOT / "scripts" / "prepare_jax_run.py", "--preset=tiny", f"--image_dirs={images}",
               "--kernels=16", f"--out_dir={bundle}"],
              )
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads((bundle / "bundle.json").read_text())
  assert (info["images"], info["skipped"]) == (3, 1)
  assert "broken.jpg" in proc.stderr
  kernels = np.load(bundle / "kernels.npy")
  assert kernels.shape == (16, 15, 15)
  np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, atol=1e-5)
  with Image.open(next((bundle / "images").glob("*astronaut*"))) as packed:
    assert min(packed.size) == 54  # ceil(32 / 0.6): the largest crop scale, no larger.

  run_dir = tmp_path / "run"
  common = [ROOT / "scripts" / "train_jax.py", f"--bundle={bundle}", f"--out_dir={run_dir}",
            "--preset=tiny", *(f"--set={k}={v}" for k, v in SMALL.items() if k != "loss.lambda_per")]
  refused = _run([*common, "--stages=pretrain"])
  assert refused.returncode != 0 and "--lambda_per must be 0" in refused.stderr
  refused = _run([*common, "--lambda_per=0", "--stages=dd,joint"])
  assert refused.returncode != 0 and "Stage joint continues the generator, critic" in refused.stderr
  proc = _run([*common, "--lambda_per=0", "--steps=2", "--stages=dd,joint", "--from_scratch",
               "--store_dtype=critic=float16", "--log_every=1"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = json.loads((run_dir / "run.json").read_text())
  assert [s["stage"] for s in run["stages"]] == ["dd", "joint"]
  assert all(s["steps"] == 2 and s["images_per_s"] > 0 for s in run["stages"])
  assert run["images"] == 3 and np.isfinite(run["stages"][-1]["curve"][-1]["mse"])
  critic_manifest = json.loads((run_dir / "critic.json").read_text())
  assert critic_manifest["store_dtype"] == "float16" and critic_manifest["backend"] == "jax"

  workdir = tmp_path / "workdir"
  proc = subprocess.run([sys.executable, "scripts/import_weights.py", f"--run_dir={run_dir}",
                         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  cfg = inference.load_config(str(workdir))
  assert cfg.stage_steps("joint") == 2 and cfg.preset == "tiny"
  assert cfg.generator.num_levels == 2 and cfg.critic.convs_per_group == (1, 1)
  loaded = inference.load_workdir_cascade(str(workdir), fold_batch_norm=False)
  assert all("/joint/checkpoints/ckpt-2" in path for path in loaded.weights_from.values())
  [generator] = loop.build_networks(cfg, ["generator"]).values()
  weights_io.load_weights(generator, str(run_dir), "generator")
  for a, b in zip(_weights(generator), _weights(loaded.generator)):
    np.testing.assert_array_equal(a, b)
  assert json.loads((workdir / "imported.json").read_text())["stages"][0]["stage"] == "dd"
  # train.py can resume the imported stage: its checkpoint holds what train_stage builds.
  nets = loop.build_networks(cfg, ["generator", "restorer", "critic"])
  tf.train.Checkpoint(
      step=tf.Variable(0, dtype=tf.int64), batches_drawn=tf.Variable(0, dtype=tf.int64), **nets,
      **loop.build_optimizers(cfg, "joint", nets)).restore(
          loop.latest_checkpoint(str(workdir), "joint")).assert_existing_objects_matched()
  with pytest.raises(FileNotFoundError, match="run.json"):
    imported.import_run(str(tmp_path), str(tmp_path / "other"))
