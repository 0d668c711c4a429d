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
from cascade_tf.data import appliers
from cascade_tf.data import corruptions
from cascade_tf.data import pipeline
from cascade_tf.data import masks as masks_lib
from cascade_tf.training import imported
from cascade_tf.training import loop
from cascade_tf.training import report
from cascade_tf.training import stages as stages_lib
from cascade_tf.training import steps as steps_lib

ROOT = Path(__file__).resolve().parents[1]


# The tiny preset with fewer layers: compiling the updates (XLA in JAX, graphs
# in TensorFlow) takes most of these tests' time, and it grows with the layers.
SMALL = {"loss.lambda_per": 0.0, "generator.num_levels": 2, "generator.num_res_blocks": 1,
         "restorer.num_encode": 2, "restorer.num_decode": 2, "critic.convs_per_group": "1,1"}


# Validation on the centre hole besides each stage's own track, and on 2 training images.
VAL_SETS = ["--set=train.val_tracks=inpaint", "--set=train.val_train_images=2"]


def _tiny():
  return config_lib.with_overrides(config_lib.tiny(), SMALL)


def _run(args, **kwargs):
  # XLA's backend (LLVM) optimisation off: these tiny one-to-three-step runs are all
  # compilation, which this makes 2.5x faster (the updates worker: 72 -> 29 s on the
  # 2-core CPU) with the same logged values; the programs are still traced and jitted.
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": flags.strip()}
  proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, **kwargs)
  return proc


def _weights(model):
  return [np.array(v.numpy()) for v in model.weights]


def test_weights_io_round_trip_shards_and_errors(tmp_path):
  cfg = _tiny()
  keras.utils.set_random_seed(1)
  [generator] = stages_lib.build_networks(cfg, ["generator"]).values()
  paths = weights_io.save_weights(generator, str(tmp_path / "w"), "generator", max_bytes=4096)
  assert len(paths) > 3 and paths[-1].endswith("generator.json")  # Several shards, manifest last.
  manifest = weights_io.read_manifest(str(tmp_path / "w"), "generator")
  sizes = [4 * int(np.prod(v["shape"])) for v in manifest["variables"]]
  for shard in manifest["shards"]:  # At most max_bytes, or one larger array alone.
    assert len(shard["indices"]) == 1 or sum(sizes[i] for i in shard["indices"]) <= 4096

  keras.utils.set_random_seed(2)
  [other] = stages_lib.build_networks(cfg, ["generator"]).values()
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

  # A grown network (a wider bottleneck) loads the saved one with `grow`, its output unchanged.
  wide_cfg = config_lib.with_overrides(cfg, {"generator.bottleneck_filters": 24})
  [wide] = stages_lib.build_networks(wide_cfg, ["generator"]).values()
  with pytest.raises(ValueError, match="different configuration"):
    weights_io.load_weights(wide, str(tmp_path / "w"), "generator")
  manifest = weights_io.load_weights(wide, str(tmp_path / "w"), "generator", grow=True)
  assert {"enc2_conv", "res1_conv1"} <= set(manifest["grown"]) and "enc1_conv" not in manifest["grown"]
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(keras.ops.convert_to_numpy(wide(x, training=False)),
                             keras.ops.convert_to_numpy(generator(x, training=False)), atol=1e-5)

  [restorer] = stages_lib.build_networks(cfg, ["restorer"]).values()
  with pytest.raises(ValueError, match=r"generator\.json.*different configuration"):
    weights_io.load_weights(restorer, str(tmp_path / "w"), "generator")
  with pytest.raises(ValueError, match=r"generator\.json.*nor does it grow into it"):
    weights_io.load_weights(restorer, str(tmp_path / "w"), "generator", grow=True)
  with pytest.raises(FileNotFoundError, match="restorer.json"):
    weights_io.load_weights(restorer, str(tmp_path / "w"), "restorer")
  second_shard = weights_io.read_manifest(str(tmp_path / "w"), "generator")["shards"][1]["file"]
  os.remove(tmp_path / "w" / second_shard)
  with pytest.raises(FileNotFoundError, match=second_shard):
    weights_io.load_weights(other, str(tmp_path / "w"), "generator")


def test_save_weights_is_atomic_when_the_disk_fills(tmp_path, monkeypatch):
  """A save that fails midway leaves the previous one loadable and no debris; one that
  succeeds replaces it and removes the old shards."""
  import errno
  cfg = _tiny()
  keras.utils.set_random_seed(1)
  [first] = stages_lib.build_networks(cfg, ["generator"]).values()
  folder = str(tmp_path / "w")
  weights_io.save_weights(first, folder, "generator", max_bytes=4096)
  before = sorted(os.listdir(folder))
  keras.utils.set_random_seed(2)
  [second] = stages_lib.build_networks(cfg, ["generator"]).values()

  real_savez, calls = np.savez, []

  def savez_until_full(file, **arrays):
    calls.append(1)
    if len(calls) == 3:  # The third shard: half written, then the disk is full.
      file.write(b"PK\x03\x04 partial")
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_savez(file, **arrays)

  monkeypatch.setattr(np, "savez", savez_until_full)
  with pytest.raises(OSError, match="No space left"):
    weights_io.save_weights(second, folder, "generator", max_bytes=4096)
  monkeypatch.setattr(np, "savez", real_savez)
  assert sorted(os.listdir(folder)) == before  # Nothing of the failed save is left.
  [loaded] = stages_lib.build_networks(cfg, ["generator"]).values()
  weights_io.load_weights(loaded, folder, "generator")
  for a, b in zip(_weights(first), _weights(loaded)):
    np.testing.assert_array_equal(a, b)

  weights_io.save_weights(second, folder, "generator", max_bytes=4096)
  after = sorted(os.listdir(folder))
  assert not set(after) & (set(before) - {"generator.json"})  # The old shards are gone.
  weights_io.load_weights(loaded, folder, "generator")
  for a, b in zip(_weights(second), _weights(loaded)):
    np.testing.assert_array_equal(a, b)


def test_jax_corruptions_match_tensorflow(tmp_path):
  """The tf.data pipeline's corruptions and the JAX trainer's, from the same sampled parameters."""
  cfg = config_lib.tiny().data
  rng = np.random.default_rng(0)
  clean = rng.uniform(0.2, 0.8, (2, 32, 32, 3)).astype("float32")
  seeds = np.array([[5, 0], [5, 1]], np.int64)
  params = [corruptions.sample_corruption(seed, [32, 32, 3], cfg) for seed in seeds]
  kernels = np.stack([p["blur_kernel"].numpy() for p in params])
  noise = np.stack([p["noise"].numpy() for p in params])
  assert noise.std() > 0.01  # Noise on.
  mask = appliers.hole_mask(32, 32, cfg.hole_size)[None].numpy()
  box = np.zeros((1, 32, 32, 1), np.float32)
  box[:, 4:12, 20:30] = 1.0
  np.savez(tmp_path / "params.npz", clean=clean, blur_kernel=kernels, noise=noise, mask=mask,
           box=box)
  delta = corruptions.delta_kernel(cfg.blur_kernel_size).numpy()[None]
  np.savez(tmp_path / "bank.npz", blur_kernel=delta, noise_sigma=np.array([0.05], np.float32))
  proc = _run([ROOT / "tests" / "jax_worker.py", "corrupt", tmp_path])
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(tmp_path / "corrupted.npz") as out:
    jax_out = {k: out[k] for k in out.files}

  for track in ("restore", "joint", "inpaint"):
    expected = corruptions.corrupt_batch(clean, seeds, track, cfg)["corrupted"].numpy()
    np.testing.assert_allclose(jax_out[track], expected, atol=1e-5, err_msg=track)
  # From a bank of one draw (no blur, sigma 0.05): the hole filled, noise of that sigma elsewhere.
  hole = mask[0, :, :, 0] > 0
  sampled = jax_out["sampled"]
  np.testing.assert_array_equal(sampled[:, hole], cfg.hole_fill)
  residual = (sampled - clean)[:, ~hole]
  assert abs(residual.mean()) < 0.005 and residual.std() == pytest.approx(0.05, rel=0.05)
  # The batch carries its mask, as the tf.data pipeline's does (mask-aware models use it).
  np.testing.assert_array_equal(jax_out["sampled_mask"], np.broadcast_to(mask, (2, 32, 32, 1)))
  # The blind track: with every probability 1 the bank's box, the blur (a delta) and the
  # noise; with every probability 0 the clean images and no mask.
  boxed = box[0, :, :, 0] > 0
  np.testing.assert_array_equal(jax_out["blind_all_mask"], np.broadcast_to(box, (2, 32, 32, 1)))
  np.testing.assert_array_equal(jax_out["blind_all"][:, boxed], cfg.hole_fill)
  assert (jax_out["blind_all"] - clean)[:, ~boxed].std() == pytest.approx(0.05, rel=0.1)
  np.testing.assert_array_equal(jax_out["blind_none"], clean)
  np.testing.assert_array_equal(jax_out["blind_none_mask"], 0.0)


def test_jax_trainer_refuses_what_its_corruption_bank_cannot_draw():
  from cascade_tf.training import jax_steps  # pylint: disable=g-import-not-at-top
  for stage in stages_lib.STAGES:
    jax_steps.check_supported(config_lib.tiny(), stage)  # The paper's tracks: fine.
    jax_steps.check_supported(config_lib.photo(), stage, "mixed")  # A bank of its masks.
  jax_steps.check_supported(config_lib.photo(), "dd")  # blind_restore: no hole, no masks.
  with pytest.raises(ValueError, match="track 'blind' with 'mixed' holes, but the bundle's "
                     "corruption bank has 'centre' holes"):
    jax_steps.check_supported(config_lib.photo(), "pretrain")


def _match_updates(tmp_path, cfg, stage_names):
  """Each named stage's updates, from the same weights and noisy batch, on both backends."""
  (tmp_path / "config.json").write_text(config_lib.to_json(cfg))
  (tmp_path / "stages.json").write_text(json.dumps(list(stage_names)))
  strategy = tf.distribute.get_strategy()
  wired, batches = {}, {}
  rng = np.random.default_rng(0)
  for stage in stage_names:
    keras.utils.set_random_seed(3)
    wired[stage] = stages_lib.build_stage(cfg, stage, global_batch_size=4)
    for name, net in wired[stage].nets.items():
      weights_io.save_weights(net, str(tmp_path / stage / "init"), name)
    clean = rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    seeds = np.stack([np.full(4, 7), np.arange(4)], axis=1)
    corrupted = corruptions.corrupt_batch(clean, seeds, stages_lib.SPECS[stage].track,
                                          cfg.data)
    batches[stage] = {"corrupted": corrupted["corrupted"].numpy(), "clean": clean,
                      "mask": corrupted["mask"].numpy(), "mix": corrupted["mix"].numpy()}
    np.savez(tmp_path / stage / "batch.npz", **batches[stage])
  proc = _run([ROOT / "tests" / "jax_worker.py", "updates", tmp_path])
  assert proc.returncode == 0, proc.stderr[-3000:]

  for stage, stage_wired in wired.items():
    batch = {k: tf.constant(v) for k, v in batches[stage].items()}
    logged = {}
    for update in stage_wired.updates:  # The critic first.
      optimizer = stages_lib.new_optimizer(cfg, stage, update.name)
      optimizer.build(update.variables)
      step = steps_lib.make_step(strategy, update, optimizer)
      logged[update.name] = step(batch)
    tf_values = {k: float(v) for k, v in
                 stages_lib.logged_values(logged["main"], logged.get("critic")).items()}
    jax_values = json.loads((tmp_path / stage / "values.json").read_text())
    assert jax_values.keys() == tf_values.keys(), stage
    assert "grad_norm" in tf_values and ("critic/grad_norm" in tf_values) == (stage in (
        "gan", "joint"))
    for key, value in tf_values.items():
      assert jax_values[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (stage, key)
    for name, net in stage_wired.nets.items():
      [after] = stages_lib.build_networks(cfg, [name]).values()
      weights_io.load_weights(after, str(tmp_path / stage / "after"), name)
      [initial] = stages_lib.build_networks(cfg, [name]).values()
      weights_io.load_weights(initial, str(tmp_path / stage / "init"), name)
      moved = 0.0
      for tf_w, jax_w, init_w in zip(_weights(net), _weights(after), _weights(initial)):
        np.testing.assert_allclose(jax_w, tf_w, atol=1e-4, err_msg=f"{stage} {name}")
        moved = max(moved, float(np.abs(tf_w - init_w).max()))
      assert moved > 5e-4, (stage, name)  # The update changed the weights (lr 1e-3).
      if name == "critic" and cfg.loss.critic_constraint == "clip":
        assert max(float(np.abs(w).max()) for w in _weights(after)) <= cfg.train.clip + 1e-7


def test_jax_updates_match_tensorflow_updates(tmp_path):
  """Every stage, with the options of the shipped model (mask channel, prefill, composite,
  dilations, U-Net restorer, L1, Adam with cosine decay; the critic's RMSProp and clipping
  as the paper's)."""
  _match_updates(tmp_path, config_lib.with_overrides(_tiny(), {
      "train.batch_size": 4, "train.lr": 1e-3, "train.optimizer": "adam",
      "train.lr_decay": "cosine", "loss.reconstruction": "l1", "generator.mask_channel": True,
      "generator.prefill": True, "generator.composite": True, "generator.dilations": "1,2",
      "restorer.arch": "unet", "restorer.unet_filters": "4,8", "restorer.unet_blocks": 1}),
                 stages_lib.STAGES)


def test_jax_wgan_gp_and_psnr_loss_updates_match_tensorflow_updates(tmp_path):
  """The gradient penalty's input gradient is the one backend-specific piece: both agree;
  and so does `pretrain` on minus the PSNR (`loss.reconstruction=psnr`)."""
  _match_updates(tmp_path, config_lib.with_overrides(_tiny(), {
      "train.batch_size": 4, "train.lr": 1e-3, "loss.critic_constraint": "gp",
      "loss.reconstruction": "psnr"}), ["pretrain", "gan"])


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
               "--kernels=16", "--mask_family=mixed", "--masks=8", f"--out_dir={bundle}",
               "--set=train.joint_track=blind", *VAL_SETS])
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads((bundle / "bundle.json").read_text())
  assert (info["images"], info["skipped"]) == (3, 1)
  assert "broken.jpg" in proc.stderr
  with np.load(bundle / "corruption_bank.npz") as bank:
    kernels, sigmas = bank["blur_kernel"], bank["noise_sigma"]
    mask_bits, mask_family = bank["mask_bits"], str(bank["mask_family"])
  # Mask i is the pipeline's draw for the seed (kernel_seed=1, i) folded with 1.
  assert mask_bits.shape == (8, 32, 4) and mask_family == "mixed" and info["masks"] == 8
  seed = corruptions.fold_in(np.array([[1, 5]], np.int64), 1)
  expected = masks_lib.masks("mixed", seed, 32, 32, config_lib.tiny().data).numpy()[0, ..., 0]
  np.testing.assert_array_equal(np.unpackbits(mask_bits[5], axis=-1), expected > 0.5)
  assert kernels.shape == (16, 15, 15) and sigmas.shape == (16,)
  np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, atol=1e-5)
  data_cfg = config_lib.tiny().data
  assert np.all((sigmas >= data_cfg.noise_sigma_min) & (sigmas <= data_cfg.noise_sigma_max))
  # Row i is the sampler's draw with seed (kernel_seed=1, i).
  draw = corruptions.sample_corruption(np.array([1, 3]), [1, 1, 1], data_cfg)
  np.testing.assert_array_equal(kernels[3], draw["blur_kernel"].numpy())
  assert sigmas[3] == draw["noise_sigma"].numpy()
  with Image.open(next((bundle / "images").glob("*astronaut*"))) as packed:
    assert min(packed.size) == 54  # ceil(32 / 0.6): the largest crop scale, no larger.
  # train.py's validation batch of every validation set of the tiny preset's stages: each
  # stage's track and train.val_tracks, on the test images and on 2 training images.
  tiny_mixed = config_lib.with_overrides(config_lib.tiny(), {"data.mask_family": "mixed"})
  assert info["validation"] == {"dataset": "samples", "images": {
      "inpaint": 4, "joint_free": 4, "restore": 4,
      "inpaint@train": 2, "joint_free@train": 2, "restore@train": 2}}
  with np.load(bundle / "validation.npz") as stored:
    expected = pipeline.validation_batch(tiny_mixed.data, "joint_free", 4)
    for name in ("clean", "corrupted", "mask"):
      np.testing.assert_array_equal(stored[f"joint_free.{name}"], expected[name].numpy())
    expected = pipeline.validation_batch(tiny_mixed.data, "joint_free", 2, split="train")
    np.testing.assert_array_equal(stored["joint_free@train.clean"], expected["clean"].numpy())
    joint_batch = {name: stored[f"joint_free.{name}"] for name in ("clean", "corrupted", "mask")}

  run_dir = tmp_path / "run"
  common = [ROOT / "scripts" / "train_jax.py", f"--bundle={bundle}", f"--out_dir={run_dir}",
            "--preset=tiny", *(f"--set={k}={v}" for k, v in SMALL.items() if k != "loss.lambda_per")]
  refused = _run([*common, "--stages=pretrain"])  # (The stage order: test_stages.py.)
  assert refused.returncode != 0 and "--lambda_per must be 0" in refused.stderr
  centre = _run([*common, "--lambda_per=0", "--stages=dd,joint", "--from_scratch",
                 "--mask_family=centre"])
  assert centre.returncode != 0
  assert "track 'joint' with 'centre' holes, but the bundle's corruption bank has 'mixed'" in (
      centre.stderr)
  # The blind tracks with the bank's masks, and a batch size of the restorer's own.
  proc = _run([*common, "--lambda_per=0", "--steps=3", "--stages=dd,joint", "--from_scratch",
               "--store_dtype=critic=float16", "--log_every=1", "--mask_family=mixed",
               "--set=train.dd_track=blind_restore", "--set=train.joint_track=blind",
               "--set=train.dd_batch_size=2", "--set=train.dd_images=6", "--eval_every=2",
               *VAL_SETS])
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = json.loads((run_dir / "run.json").read_text())
  # Validated at step 2 (eval_every) and at the last step, on the validation track of each
  # training track (blind_restore -> restore, blind -> joint_free); joint, which starts from
  # dd's trained restorer, at step 0 too.
  assert [v["step"] for v in run["stages"][0]["validation"]] == [2, 3]
  assert [v["step"] for v in run["stages"][1]["validation"]] == [0, 2, 3]
  assert [s["stage"] for s in run["stages"]] == ["dd", "joint"]
  assert [(s["track"], s["batch_size"]) for s in run["stages"]] == [("blind_restore", 2),
                                                                    ("blind", 4)]
  assert all(s["steps"] == 3 and s["images_per_s"] > 0 for s in run["stages"])
  assert run["images"] == 3 and np.isfinite(run["stages"][-1]["curve"][-1]["mse"])
  critic_manifest = json.loads((run_dir / "critic.json").read_text())
  assert critic_manifest["store_dtype"] == "float16" and critic_manifest["backend"] == "jax"
  # --init_dir grows a network that has widened since (as train.py --init_from=pretrained).
  grown = _run([ROOT / "scripts" / "train_jax.py", f"--bundle={bundle}",
                f"--out_dir={tmp_path / 'grown'}", "--preset=tiny",
                *(f"--set={k}={v}" for k, v in SMALL.items() if k != "loss.lambda_per"),
                "--lambda_per=0", "--steps=1", "--stages=pretrain", f"--init_dir={run_dir}",
                "--mask_family=mixed", "--set=train.pretrain_track=blind",
                "--set=generator.bottleneck_filters=12"])
  assert grown.returncode == 0, grown.stderr[-3000:]
  assert f"generator: grown from {run_dir} by" in grown.stdout and "enc2_conv" in grown.stdout

  workdir = tmp_path / "workdir"
  proc = subprocess.run([sys.executable, "scripts/import_weights.py", f"--run_dir={run_dir}",
                         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  cfg = inference.load_config(str(workdir))
  assert cfg.stage_steps("joint") == 3 and cfg.preset == "tiny"
  # The dd stage's image budget (6 images, batch 2) became the 3 steps it made.
  assert (cfg.train.dd_images, cfg.train.dd_steps) == (None, 3)
  assert cfg.generator.num_levels == 2 and cfg.critic.convs_per_group == (1, 1)
  loaded = inference.load_workdir_cascade(str(workdir), fold_batch_norm=False)
  assert all("/joint/checkpoints/ckpt-3" in path for path in loaded.weights_from.values())
  # The run's metrics.jsonl files came along: the JAX validation, in train.py's format.
  curves = report.load_metrics(str(workdir))
  assert [r["step"] for r in curves["dd"]["train"]] == [2, 3]  # (Step 1 is the compile.)
  dd_sets = [("restore", "test"), ("inpaint", "test"), ("restore", "train"), ("inpaint", "train")]
  assert [(r["val_track"], r["val_split"]) for r in curves["dd"]["val"]] == dd_sets * 2
  joint_val = report.primary_rows(curves["joint"]["val"])
  assert [(r["step"], r["val_track"]) for r in joint_val] == [
      (0, "joint_free"), (2, "joint_free"), (3, "joint_free")]
  # ... and the last one scored the weights it ended with: TensorFlow's validation of the
  # imported networks on the same batch agrees.
  joint_stage = stages_lib.build_stage(cfg, "joint", global_batch_size=4, nets={
      "generator": loaded.generator, "restorer": loaded.restorer,
      **stages_lib.build_networks(cfg, ["critic"])})
  scores, _ = stages_lib.validation_scores(joint_stage, joint_batch)
  for name, value in scores.items():
    assert joint_val[-1][f"val_{name}"] == pytest.approx(value, abs=0.01), name
  [generator] = stages_lib.build_networks(cfg, ["generator"]).values()
  weights_io.load_weights(generator, str(run_dir), "generator")
  for a, b in zip(_weights(generator), _weights(loaded.generator)):
    np.testing.assert_array_equal(a, b)
  assert json.loads((workdir / "imported.json").read_text())["stages"][0]["stage"] == "dd"
  # train.py can resume the imported stage: its checkpoint holds what train_stage builds.
  nets = stages_lib.build_networks(cfg, ["generator", "restorer", "critic"])
  tf.train.Checkpoint(
      step=tf.Variable(0, dtype=tf.int64), batches_drawn=tf.Variable(0, dtype=tf.int64), **nets,
      **loop.build_optimizers(cfg, "joint", nets)).restore(
          loop.latest_checkpoint(str(workdir), "joint")).assert_existing_objects_matched()
  with pytest.raises(FileNotFoundError, match="run.json"):
    imported.import_run(str(tmp_path), str(tmp_path / "other"))


def _sampler_batches(tmp_path, image, settings):
  """One batch of scripts/train_jax.py's CropSampler (64 full-image crops of `image`) for each
  keyword-argument string of `settings`, sampled in a subprocess (JAX's trainer module)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(image).save(tmp_path / "a.png")
  code = "import sys, numpy as np; sys.path.insert(0, 'scripts'); import train_jax\n"
  for i, kwargs in enumerate(settings):
    code += (f"s = train_jax.CropSampler({str(tmp_path)!r}, 24, 1.0, 64, 0, 1, {kwargs})\n"
             f"np.save({str(tmp_path)!r} + '/{i}.npy', s.next()); s.close()\n")
  proc = _run(["-c", code])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [np.load(tmp_path / f"{i}.npy") for i in range(len(settings))]


def _closest(crop, candidates: dict):
  """The key of the candidate equal to `crop` (to float rounding)."""
  errors = {key: np.abs(c - crop).max() for key, c in candidates.items()}
  best = min(errors, key=errors.get)
  assert errors[best] < 1e-6
  return best


def test_jax_crop_sampler_draws_the_configs_symmetries_and_channel_orders(tmp_path):
  """scripts/train_jax.py's host sampler puts crops through data.train_augment's transforms,
  and with data.train_channel_permute = 1 every crop into another RGB order."""
  from cascade_tf.data import augment  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
  window = image.astype(np.float32) / 255
  candidates = {(k, j): augment.channel_order_np(augment.dihedral_np(window, k), j)
                for k in range(8) for j in range(6)}
  flip, dihedral, permuted = _sampler_batches(
      tmp_path, image, ["augment='flip'", "augment='dihedral'",
                        "augment='dihedral', channel_permute=1.0"])
  for batch, transforms, orders in ((flip, {0, 1}, {0}), (dihedral, set(range(8)), {0}),
                                    (permuted, set(range(8)), set(range(1, 6)))):
    seen = {_closest(crop, candidates) for crop in batch}
    assert {k for k, _ in seen} == transforms and {j for _, j in seen} == orders
