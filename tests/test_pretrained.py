"""The shipped cascade: its checksums, `ship`/`load`, and the three CLIs' default model."""

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import pretrained
from cascade_tf import ranges
from cascade_tf import weights_io
from cascade_tf.models import cascade
from tests import workdirs

ROOT = Path(__file__).resolve().parents[1]
SIZE_LIMIT = 25 * 10**6  # Bytes of weights the repository may carry (the 25 MB).


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory):
  """A tiny random cascade shipped into a temporary folder."""
  workdir = workdirs.make_random_workdir(tmp_path_factory.mktemp("workdir"))
  directory = tmp_path_factory.mktemp("shipped")
  sums = pretrained.ship(workdir, str(directory))
  return workdir, directory, sums


def test_ship_writes_float16_weights_that_load_back(shipped_copy):
  workdir, directory, sums = shipped_copy
  assert set(sums) >= {"config.json", "generator.json", "restorer.json"}
  assert all(name in sums for name in os.listdir(directory) if name.endswith(".npz"))
  assert not [n for n in os.listdir(directory) if n.startswith(".ship-")]  # Staging removed.
  assert weights_io.read_manifest(str(directory), "generator")["store_dtype"] == "float16"
  shipped = pretrained.load(str(directory))
  original = inference.load_workdir_cascade(workdir, fold_batch_norm=False)
  for name in pretrained.NETWORKS:
    for saved, trained in zip(getattr(shipped, name).weights, getattr(original, name).weights):
      np.testing.assert_allclose(saved.numpy(), trained.numpy(), rtol=1e-3, atol=1e-4)
  assert shipped.config == original.config


def test_a_flipped_byte_fails_naming_the_file_and_both_hashes(shipped_copy, tmp_path):
  _, directory, sums = shipped_copy
  copy = tmp_path / "copy"
  shutil.copytree(directory, copy)
  shard = sorted(name for name in sums if name.startswith("restorer-"))[0]
  data = bytearray((copy / shard).read_bytes())
  data[len(data) // 2] ^= 0x01
  (copy / shard).write_bytes(bytes(data))
  with pytest.raises(ValueError) as error:
    pretrained.load(str(copy))
  message = str(error.value)
  assert str(copy / shard) in message and sums[shard] in message
  assert pretrained.sha256(str(copy / shard)) in message


def test_a_missing_or_incomplete_manifest_is_an_error(shipped_copy, tmp_path):
  _, directory, _ = shipped_copy
  copy = tmp_path / "copy"
  shutil.copytree(directory, copy)
  lines = (copy / pretrained.SUMS_FILE).read_text().splitlines()
  (copy / pretrained.SUMS_FILE).write_text(
      "\n".join(line for line in lines if not line.endswith("generator.json")) + "\n")
  with pytest.raises(ValueError, match="does not list generator.json"):
    pretrained.verify(str(copy))
  (copy / pretrained.SUMS_FILE).unlink()
  assert not pretrained.available(str(copy))
  with pytest.raises(FileNotFoundError, match="SHA256SUMS is missing"):
    pretrained.load(str(copy))


def test_the_shipped_cascade_verifies_and_fits_the_size_limit():
  sums = pretrained.verify()
  weights = sum(os.path.getsize(os.path.join(pretrained.DIRECTORY, n)) for n in sums)
  assert weights <= SIZE_LIMIT
  cfg = pretrained.load_config()
  assert cfg.preset == "photo" and cfg.generator.mask_channel and cfg.generator.composite
  # The preset builds the shipped networks, so `--preset=photo --init_from=pretrained` fits.
  assert cfg.generator == config_lib.photo().generator
  assert cfg.restorer == config_lib.photo().restorer
  assert (Path(pretrained.DIRECTORY) / "MODEL_CARD.md").exists()


def _start(args, cwd, log):
  return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
  """restore.py --demo, export.py and evaluate.py, none told which model: started together."""
  tmp = tmp_path_factory.mktemp("clis")
  runs = {
      "demo": ["restore.py", "--demo", "--demo_images=astronaut", f"--output_dir={tmp / 'demo'}"],
      "export": ["export.py", f"--export_dir={tmp / 'export'}"],
      "evaluate": ["evaluate.py", "--dataset=samples", "--max_images=1", "--tracks=inpaint_free",
                   "--baselines=identity,telea", "--notiming", "--figure_images=0",
                   f"--output_dir={tmp / 'evaluate'}"],
  }
  processes = {}
  for name, args in runs.items():
    log = open(tmp / f"{name}.log", "w")
    processes[name] = (_start(args, ROOT, log), log)
  results = {}
  for name, (process, log) in processes.items():
    try:
      process.wait(timeout=600)
    finally:
      process.kill()
      log.close()
    results[name] = (process.returncode, (tmp / f"{name}.log").read_text())
  return tmp, results


def test_restore_demo_runs_end_to_end_with_the_shipped_model(cli_runs):
  tmp, results = cli_runs
  code, output = results["demo"]
  assert code == 0, output[-3000:]
  assert "model pretrained" in output
  row = next(line for line in output.splitlines() if line.startswith("| astronaut |"))
  hole, psnr_input, psnr_baseline, psnr_cascade = (float(x) for x in row.split("|")[2:6])
  assert 5.0 < hole < 45.0
  assert psnr_cascade > psnr_input  # The shipped model repairs rather than damages.
  assert (tmp / "demo" / "demo.png").stat().st_size > 10_000


def test_export_defaults_to_the_shipped_model_and_matches_keras(cli_runs):
  tmp, results = cli_runs
  code, output = results["export"]
  assert code == 0, output[-3000:]
  version = tmp / "export" / "1"
  provenance = inference.read_provenance(str(version))
  assert provenance["workdir"] == "pretrained"
  loaded = inference.load_pretrained_cascade()
  rng = np.random.default_rng(0)
  images = rng.uniform(0.0, 1.0, (2, 128, 96, 3)).astype(np.float32)
  masks = np.zeros((2, 128, 96, 1), np.float32)
  masks[:, 40:70, 20:60] = 1.0
  images = np.where(masks > 0.5, np.float32(0.5), images)
  saved = tf.saved_model.load(str(version)).signatures["serving_masked"]
  served = saved(images=tf.constant(images), masks=tf.constant(masks))
  keras_out = loaded.model(cascade.cascade_inputs(images * 2.0 - 1.0, masks),
                           training=False)
  for name in ("inpainted", "restored"):
    expected = np.clip((keras_out[name].numpy() + 1.0) / 2.0, 0.0, 1.0)
    np.testing.assert_allclose(served[name].numpy(), expected, atol=1e-5)


def test_evaluate_scores_the_shipped_model_by_default(cli_runs):
  tmp, results = cli_runs
  code, output = results["evaluate"]
  assert code == 0, output[-3000:]
  data = json.loads((tmp / "evaluate" / "results.json").read_text())
  text = json.dumps(data)
  assert '"pretrained"' in text and '"cascade"' in text
  # The default --mixed_precision=auto, resolved for inference on this machine, is recorded.
  from cascade_tf import runtime
  assert data["methods"]["cascade"]["precision"] == runtime.resolve_precision("auto", "infer")[0]


def test_bfloat16_inference_of_the_shipped_model_stays_close_to_float32():
  """What `auto` picks on CPUs with native bfloat16, run here (emulated where there is none)."""
  from skimage import data as skimage_data
  photo = skimage_data.astronaut()[100:164, 180:244].astype(np.float32) / 255.0
  masks = np.zeros((1, 64, 64, 1), np.float32)
  masks[:, 20:36, 24:40] = 1.0
  images = np.where(masks > 0.5, np.float32(0.5), photo[None])
  outputs = {}
  for precision in ("float32", "mixed_bfloat16"):
    repairer = inference.Repairer(pretrained.NAME, precision=precision)
    assert repairer.precision == precision
    outputs[precision] = {k: v.numpy() for k, v in repairer(images, masks).items()}
  for name in ("inpainted", "restored"):
    assert outputs["mixed_bfloat16"][name].dtype == np.float32  # Outputs stay float32.
    error = np.mean((outputs["mixed_bfloat16"][name] - outputs["float32"][name]) ** 2)
    assert 0.0 < error and 10.0 * np.log10(1.0 / error) > 35.0  # Close, but really bfloat16.


def test_fine_tuning_starts_from_the_shipped_networks_and_may_grow_the_generator(caplog):
  """`train.py --init_from=pretrained`: each trained network starts as the shipped one; a
  generator with new decoder blocks (which start as the identity) computes what it did."""
  from cascade_tf.training import loop  # pylint: disable=g-import-not-at-top
  from cascade_tf.training import stages as stages_lib  # pylint: disable=g-import-not-at-top
  shipped = pretrained.load()
  grown = config_lib.with_overrides(shipped.config, {"generator.decoder_res_blocks": 1})
  nets = stages_lib.build_networks(grown, ["generator", "restorer"])
  with caplog.at_level("INFO"):
    for stage in ("pretrain", "dd"):
      assert loop._warm_start_pretrained(stages_lib.SPECS[stage], nets) == [
          f"{stages_lib.SPECS[stage].trained[0]}<-{pretrained.NAME}"]
  assert "generator warm-started from the pretrained cascade, grown by 8 new or widened layers" in caplog.text
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)  # The networks' size.
  mask = np.zeros((1, 128, 128, 1), np.float32)
  mask[:, 32:80, 40:88] = 1.0
  x = np.concatenate([image, mask], -1)
  np.testing.assert_allclose(nets["generator"](x, training=False).numpy(),
                             shipped.generator(x, training=False).numpy(), atol=1e-6)
  for a, b in zip(nets["restorer"].weights, shipped.restorer.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # A wider bottleneck grows too, with the shipped output at the start.
  width = shipped.generator.get_layer("res1_conv1").filters + 32
  wide = stages_lib.build_networks(config_lib.with_overrides(
      shipped.config, {"generator.bottleneck_filters": width}), ["generator"])
  loop._warm_start_pretrained(stages_lib.SPECS["pretrain"], wide)
  np.testing.assert_allclose(wide["generator"](x, training=False).numpy(),
                             shipped.generator(x, training=False).numpy(), atol=1e-5)
  other = config_lib.with_overrides(shipped.config, {"generator.base_filters": 16})
  with pytest.raises(ValueError, match="does not fit this config's generator"):
    loop._warm_start_pretrained(stages_lib.SPECS["pretrain"],
                                stages_lib.build_networks(other, ["generator"]))


def test_combine_pairs_one_sources_generator_with_anothers_restorer(tmp_path):
  """scripts/combine_cascade.py: a generator trained alone, scored with the shipped restorer."""
  tiny_dir = workdirs.make_random_workdir(tmp_path / "tiny")
  out = str(tmp_path / "combined")
  proc = subprocess.run([sys.executable, "scripts/combine_cascade.py", f"--generator={tiny_dir}",
                         "--restorer=pretrained", f"--output={out}"], cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr
  combined = inference.load_workdir_cascade(out, fold_batch_norm=False)
  tiny = inference.load_workdir_cascade(tiny_dir, fold_batch_norm=False)
  shipped = pretrained.load()
  for got, want in ((combined.generator, tiny.generator), (combined.restorer, shipped.restorer)):
    assert len(got.weights) == len(want.weights)
    for a, b in zip(got.weights, want.weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert combined.config.generator == tiny.config.generator
  assert combined.config.restorer == shipped.config.restorer
  assert combined.config.train.dd_lr == shipped.config.train.dd_lr
  assert combined.config.train.pretrain_lr == tiny.config.train.pretrain_lr
  sources = json.loads((Path(out) / "combined_from.json").read_text())
  assert sources["generator"]["source"] == tiny_dir
  assert sources["restorer"]["source"] == "pretrained"
  # An existing workdir is never overwritten; the error names the flag.
  with pytest.raises(ValueError, match="already holds a workdir"):
    inference.combine("pretrained", "pretrained", out)


def test_combine_averages_several_generators_of_one_architecture(tmp_path):
  """--generator=a,b: the generators' weights averaged (batch-norm statistics too)."""
  sources = [workdirs.make_random_workdir(tmp_path / name, seed=seed)
             for name, seed in (("a", 0), ("b", 1))]
  for index, source in enumerate(sources):  # Every weight differs: biases, moving statistics.
    loaded = inference.load_workdir_cascade(source, fold_batch_norm=False)
    rng = np.random.default_rng(index)
    for variable in loaded.generator.weights:
      variable.assign(variable + rng.random(variable.shape).astype(np.float32))
    inference.write_workdir(str(tmp_path / (Path(source).name + "2")), loaded.config,
                            loaded.generator, loaded.restorer)
  sources = [str(tmp_path / "a2"), str(tmp_path / "b2")]
  out = inference.combine(",".join(sources), sources[0], str(tmp_path / "soup"))
  members = [inference.load_workdir_cascade(s, fold_batch_norm=False) for s in sources]
  soup = inference.load_workdir_cascade(out, fold_batch_norm=False)
  assert len(soup.generator.weights) == len(members[0].generator.weights)
  differ = 0
  for got, a, b in zip(soup.generator.weights, members[0].generator.weights,
                       members[1].generator.weights):
    np.testing.assert_allclose(got.numpy(), (a.numpy() + b.numpy()) / 2, rtol=1e-6, atol=1e-7)
    differ += int(not np.array_equal(a.numpy(), b.numpy()))
  assert differ == len(soup.generator.weights)  # Every weight, moving statistics included.
  for a, b in zip(soup.restorer.weights, members[0].restorer.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  record = json.loads((Path(out) / "combined_from.json").read_text())["generator"]
  assert record["averaged_over"] == 2 and len(record["weights"]) == 2
  # Generators of different architectures cannot be averaged; the error names both.
  with pytest.raises(ValueError, match=f"--generator: pretrained's generator .* is not "
                                       f"{sources[0]}'s"):
    inference.combine(f"{sources[0]},pretrained", sources[0], str(tmp_path / "bad"))


@pytest.mark.parametrize("freeze", [False, True])
def test_repairer_runs_the_shipped_cascade_at_any_size(freeze):
  """inference.Repairer runs the cascade as one graph, frozen or not: it computes what the
  Keras model computes, for any batch and size, masks or not."""
  repairer = inference.Repairer(pretrained.NAME, freeze=freeze)
  assert repairer.kind == "workdir" and repairer.frozen is freeze
  rng = np.random.default_rng(0)
  for shape in ((1, 64, 96), (2, 32, 32)):
    images = rng.uniform(0, 1, shape + (3,)).astype(np.float32)
    masks = np.zeros(shape + (1,), np.float32)
    masks[:, 8:24, 8:24] = 1.0
    for m in (None, masks):
      got = repairer(images, m)
      raw = repairer._model(cascade.cascade_inputs(
          ranges.to_model(images), np.zeros_like(masks) if m is None else m), training=False)
      for name in ("inpainted", "restored"):
        assert got[name].shape == shape + (3,)
        np.testing.assert_allclose(got[name].numpy(),
                                   ranges.from_model(raw[name], clip=True).numpy(), atol=1e-5)
