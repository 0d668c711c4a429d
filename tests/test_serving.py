"""Tests of the SavedModel export (cascade_tf/serving.py, export.py, serving_client.py).

One tiny workdir (random but seeded weights written as a `joint` checkpoint,
so these tests do not depend on the training loop) is exported once and
shared. TF Serving itself cannot run here: the gRPC client is tested up to
a built PredictRequest, which is then fed to the SavedModel directly.
"""

import io
import json
import os
from pathlib import Path
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from skimage import data as skimage_data
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import restoring
from cascade_tf import serving
from cascade_tf.models.cascade import cascade_inputs

import workdirs  # pylint: disable=g-bad-import-order

ROOT = Path(__file__).resolve().parents[1]
MULTIPLE = 32  # 2 ** generator.num_levels of the tiny preset.


make_workdir = workdirs.make_random_workdir


def keras_reference(model, images_01: np.ndarray, masks=None) -> dict[str, np.ndarray]:
  """The Keras cascade on the input reflect-padded (bottom/right) to a multiple of 32;
  with masks, the hole filled with 0.5 first and the masks padded alike."""
  height, width = images_01.shape[1:3]
  pad = [(0, 0), (0, -height % MULTIPLE), (0, -width % MULTIPLE), (0, 0)]
  if masks is not None:
    masks = (masks > 0.5).astype(np.float32)
    images_01 = images_01 * (1 - masks) + 0.5 * masks
    masks = np.pad(masks, pad, mode="reflect")
  padded = np.pad(images_01, pad, mode="reflect")
  out = model(cascade_inputs(padded * 2.0 - 1.0, masks), training=False)
  return {name: np.clip((out[name].numpy()[:, :height, :width] + 1.0) / 2.0, 0.0, 1.0)
          for name in serving.OUTPUTS}


def photo(height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3]: the astronaut photo resized (real image statistics)."""
  image = tf.image.resize(skimage_data.astronaut(), [height, width], antialias=True)
  return np.clip(np.round(image.numpy()), 0, 255).astype(np.uint8)


def encode(image_uint8: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  options = {"quality": 90} if fmt == "JPEG" else {}
  Image.fromarray(image_uint8).save(buffer, format=fmt, **options)
  return buffer.getvalue()


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=300, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("exports") / "cascade")


@pytest.fixture(scope="module")
def exported(workdir, export_dir):
  return serving.export_savedmodel(workdir, export_dir)


@pytest.fixture(scope="module")
def small_export(workdir, tmp_path_factory):
  """An export that accepts at most 64 x 64 = 4096 pixels."""
  return serving.export_savedmodel(workdir, str(tmp_path_factory.mktemp("small") / "cascade"),
                                   max_pixels=64 * 64)


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported)


@pytest.fixture(scope="module")
def keras_model(workdir):
  return inference.load_workdir_cascade(workdir).model


def test_export_layout_and_provenance(exported, export_dir, workdir):
  assert exported == os.path.join(export_dir, "1")
  assert os.path.exists(os.path.join(exported, "saved_model.pb"))
  assert os.listdir(os.path.join(exported, "variables"))
  assert sorted(os.listdir(export_dir)) == ["1"]  # no temporary folder left behind
  provenance = inference.read_provenance(exported)
  assert provenance["version"] == 1
  assert provenance["weights_from"]["generator"].startswith(
      os.path.join(workdir, "joint", "checkpoints", "ckpt-"))
  assert config_lib.from_dict(provenance["config"]) == config_lib.tiny()
  assert provenance["min_side_px"] == MULTIPLE
  # The shared loader reads the recorded config back.
  assert inference.Repairer(exported).config == config_lib.tiny()


def test_saved_model_cli_lists_every_signature(exported):
  result = subprocess.run(saved_model_cli() + ["show", "--dir", exported, "--all"], capture_output=True,
                          text=True, timeout=300, check=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  text = result.stdout
  default = text[text.index("signature_def['serving_default']"):]
  default = default[:default.index("Method name is")]
  assert "inputs['images']" in default and "DT_FLOAT" in default
  assert "shape: (-1, -1, -1, 3)" in default
  assert "outputs['restored']" in default and "outputs['inpainted']" in default
  as_bytes = text[text.index("signature_def['serving_bytes']"):]
  as_bytes = as_bytes[:as_bytes.index("Method name is")]
  assert "inputs['images_bytes']" in as_bytes and "DT_STRING" in as_bytes
  assert "outputs['restored_bytes']" in as_bytes and "outputs['inpainted_bytes']" in as_bytes
  masked = text[text.index("signature_def['serving_masked']"):]
  masked = masked[:masked.index("Method name is")]
  assert "inputs['images']" in masked and "inputs['masks']" in masked
  assert "shape: (-1, -1, -1, 1)" in masked and "outputs['restored']" in masked
  masked_bytes = text[text.index("signature_def['serving_masked_bytes']"):]
  masked_bytes = masked_bytes[:masked_bytes.index("Method name is")]
  assert "inputs['images_bytes']" in masked_bytes and "inputs['masks_bytes']" in masked_bytes
  assert "Method name is: tensorflow/serving/predict" in text


def test_fresh_process_matches_keras(exported, keras_model, tmp_path):
  rng = np.random.default_rng(0)
  inputs = {
      "odd": photo(45, 70)[None].astype(np.float32) / 255.0,  # padded to 64 x 96 inside
      "batch": rng.uniform(0.0, 1.0, [3, 64, 32, 3]).astype(np.float32),  # no padding
      "smallest": photo(32, 33)[None].astype(np.float32) / 255.0,
  }
  np.savez(tmp_path / "inputs.npz", **inputs)
  # Only TensorFlow is imported there: the SavedModel must stand on its own.
  code = (
      "import sys, numpy as np, tensorflow as tf\n"
      "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
      "inputs = np.load(sys.argv[2])\n"
      "out = {}\n"
      "for key in inputs.files:\n"
      "  result = serve(images=tf.constant(inputs[key]))\n"
      "  out.update({key + '/' + name: v.numpy() for name, v in result.items()})\n"
      "np.savez(sys.argv[3], **out)\n")
  result = run_python(code, exported, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz"))
  assert result.returncode == 0, result.stderr[-3000:]
  served = np.load(tmp_path / "out.npz")
  for key, images in inputs.items():
    expected = keras_reference(keras_model, images)
    for name in serving.OUTPUTS:
      got = served[f"{key}/{name}"]
      assert got.shape == images.shape and got.dtype == np.float32
      np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-5, err_msg=f"{key}/{name}")
  # The comparison is not vacuous: the model changes the image.
  assert np.abs(served["odd/restored"] - inputs["odd"]).mean() > 0.01


def test_bytes_signature_round_trips_png_and_jpeg(loaded):
  png = encode(photo(40, 50), "PNG")
  jpeg = encode(photo(64, 48), "JPEG")
  out = loaded.signatures["serving_bytes"](images_bytes=tf.constant([png, jpeg]))
  assert set(out) == {"restored_bytes", "inpainted_bytes"}
  serve = loaded.signatures["serving_default"]
  for k, (data, decode) in enumerate([(png, tf.io.decode_png), (jpeg, tf.io.decode_jpeg)]):
    decoded = tf.cast(decode(data, channels=3), tf.float32)[None] / 255.0
    expected = serve(images=decoded)
    for name in serving.OUTPUTS:
      encoded = out[f"{name}_bytes"].numpy()[k]
      assert encoded.startswith(b"\x89PNG")
      pixels = np.asarray(Image.open(io.BytesIO(encoded)))
      assert pixels.shape == tuple(decoded.shape[1:]) and pixels.dtype == np.uint8
      # Rounding to 8 bits is the only difference from the float signature.
      np.testing.assert_allclose(pixels / 255.0, expected[name].numpy()[0], rtol=0,
                                 atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("images,match", [
    (np.full([32, 32, 3], 0.5, np.float32), r"expected float32 \[batch, height, width, 3\]"),
    (np.full([1, 32, 32, 4], 0.5, np.float32), r"expected float32 \[batch, height, width, 3\]"),
    (np.full([1, 20, 20, 3], 0.5, np.float32), r"at least 32 px"),
    (np.full([1, 32, 32, 3], 200.0, np.float32), r"in \[0, 1\] \(divide 8-bit values by 255\)"),
], ids=["rank3", "4channels", "20x20", "0-255"])
def test_invalid_images_say_what_was_expected(loaded, images, match):
  with pytest.raises(tf.errors.InvalidArgumentError, match=match):
    loaded.signatures["serving_default"](images=tf.constant(images))


def test_invalid_bytes_say_what_was_expected(loaded):
  serve = loaded.signatures["serving_bytes"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="expected encoded JPEG or PNG"):
    serve(images_bytes=tf.constant([b"definitely not an image"]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="at least 32 px"):
    serve(images_bytes=tf.constant([encode(photo(20, 40), "PNG")]))


def saved_model_cli() -> list[str]:
  cli = Path(sys.executable).with_name("saved_model_cli")
  return [str(cli)] if cli.exists() else [
      sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_session_based_loader_runs_every_signature(exported, loaded, tmp_path):
  """`saved_model_cli run` restores variables and runs signatures as TF Serving does
  (the session-based LoadSavedModel); each signature gives what tf.saved_model.load gives."""
  images = photo(45, 70)[None].astype(np.float32) / 255.0
  images_bytes = np.array([encode(photo(40, 50), "PNG"), encode(photo(64, 48), "JPEG")],
                          dtype=object)
  masks = np.zeros([1, 45, 70, 1], np.float32)
  masks[:, 5:20, 10:40] = 1.0
  np.save(tmp_path / "images.npy", images)
  np.save(tmp_path / "masks.npy", masks)
  np.save(tmp_path / "images_bytes.npy", images_bytes, allow_pickle=True)
  expected = {
      "serving_default": loaded.signatures["serving_default"](images=tf.constant(images)),
      "serving_bytes": loaded.signatures["serving_bytes"](
          images_bytes=tf.constant(list(images_bytes))),
      "serving_masked": loaded.signatures["serving_masked"](images=tf.constant(images),
                                                            masks=tf.constant(masks)),
  }
  for signature, input_names in (("serving_default", ["images"]),
                                 ("serving_bytes", ["images_bytes"]),
                                 ("serving_masked", ["images", "masks"])):
    outdir = tmp_path / signature
    inputs = ";".join(f"{name}={tmp_path / (name + '.npy')}" for name in input_names)
    result = subprocess.run(
        saved_model_cli() + ["run", "--dir", exported, "--tag_set", "serve",
                             "--signature_def", signature, "--inputs", inputs,
                             "--outdir", str(outdir)],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(outdir)) == sorted(f"{k}.npy" for k in expected[signature])
    for key, value in expected[signature].items():
      got = np.load(outdir / f"{key}.npy", allow_pickle=True)
      if signature != "serving_bytes":
        np.testing.assert_allclose(got, value.numpy(), rtol=0, atol=1e-6, err_msg=key)
      else:
        assert list(got) == list(value.numpy()), key  # the same PNG bytes


def test_pixel_limit_refuses_large_inputs_before_decoding(small_export):
  serve = tf.saved_model.load(small_export).signatures
  assert inference.read_provenance(small_export)["max_pixels"] == 4096
  # At the limit: served.
  out = serve["serving_default"](images=tf.constant(photo(64, 64)[None] / 255.0, tf.float32))
  assert out["restored"].shape == (1, 64, 64, 3)
  out = serve["serving_bytes"](images_bytes=tf.constant([encode(photo(64, 64), "PNG"),
                                                         encode(photo(32, 128), "JPEG")]))
  assert len(out["restored_bytes"].numpy()) == 2
  # Over it: per request for floats (batch * height * width) ...
  for shape in ([1, 64, 96, 3], [2, 64, 64, 3]):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images: too large; a request may hold .* at most 4096 pixels "
                             r"\(export.py --max_pixels"):
      serve["serving_default"](images=tf.constant(np.full(shape, 0.5, np.float32)))
  # ... and per image, from the header, for bytes: the PNG's pixel data is garbage,
  # which decoding would report instead.
  png = encode(photo(65, 64), "PNG")
  garbled = png[:41] + b"\0" * (len(png) - 41)
  for data in (png, garbled, encode(photo(65, 64), "JPEG")):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images_bytes: image too large; each image may have at most "
                             r"4096 pixels .*\[65\] \[64\] \[according to its header"):
      serve["serving_bytes"](images_bytes=tf.constant([data]))


def test_restore_skips_an_image_the_export_refuses(small_export, tmp_path):
  """restore.py on an export limited to 4096 pixels, untiled: the larger photo is skipped
  with the export's message, the other one is written."""
  for name, (height, width) in (("fits.png", (64, 64)), ("over.png", (64, 96))):
    Image.fromarray(photo(height, width)).save(tmp_path / name)
  report = restoring.restore_paths(
      small_export, [str(tmp_path / "fits.png"), str(tmp_path / "over.png")],
      str(tmp_path / "out"), restoring.RestoreOptions(tile_size=0), stream=io.StringIO())
  assert report.written == [str(tmp_path / "out" / "fits.png")]
  [(path, reason)] = report.skipped
  assert path == str(tmp_path / "over.png")
  assert "the model refused it: " in reason and "at most 4096 pixels" in reason


def test_negative_max_pixels_is_refused(workdir, tmp_path):
  with pytest.raises(ValueError, match="--max_pixels=-1"):
    serving.export_savedmodel(workdir, str(tmp_path / "e"), max_pixels=-1)


@pytest.mark.parametrize("which", ["default", "small"])
def test_fuzzed_bytes_never_crash_the_session_loaded_export(exported, small_export, which,
                                                            tmp_path):
  """A few hundred random, truncated, bit-flipped, empty, tiny and oversized inputs to every
  bytes signature, loaded as TF Serving loads it, in a subprocess: each request ends as valid
  PNGs or an InvalidArgumentError, and a crash fails the test instead of the run."""
  export = exported if which == "default" else small_export
  summary_path = tmp_path / "fuzz.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "scripts" / "fuzz_export.py"), export, "--cases=250",
       f"--json={summary_path}"],
      capture_output=True, text=True, timeout=600, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
  summary = json.loads(summary_path.read_text())
  assert summary["signatures"] == ["serving_bytes", "serving_masked_bytes"]
  assert not summary["failed"]
  for signature in summary["signatures"]:  # The masked one gets each case as its mask too.
    counts = {}
    for row in summary["outcomes"]:
      if row["signature"] == signature:
        key = (row["kind"], row["outcome"])
        counts[key] = counts.get(key, 0) + row["count"]
    assert sum(counts.values()) == summary["cases"] == 250
    assert counts[("valid", "ok")] == 7
    for kind in ("empty", "other_format", "too_small", "oversized", "random", "truncated"):
      assert counts.get((kind, "ok"), 0) == 0, (signature, kind)  # refused, every one
    assert counts[("oversized", "invalid")] >= 6
    # Bit flips: most are refused, some still decode (flips in pixel data).
    assert counts[("bit_flipped", "invalid")] > 0 and counts[("bit_flipped", "ok")] > 0


def test_versions_increment_and_are_never_overwritten(exported, export_dir, workdir):
  before = Path(exported, "saved_model.pb").stat().st_mtime_ns
  with pytest.raises(ValueError, match=r"--version=1: .*1 already exists"):
    serving.export_savedmodel(workdir, export_dir, version=1)
  with pytest.raises(ValueError, match="--version=0"):
    serving.export_savedmodel(workdir, export_dir, version=0)
  # A version folder that is there (even incomplete) is never reused.
  os.makedirs(os.path.join(export_dir, "7"))
  result = subprocess.run(
      [sys.executable, "export.py", f"--workdir={workdir}", f"--export_dir={export_dir}",
       "--freeze"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == os.path.join(export_dir, "8")
  assert inference.read_provenance(os.path.join(export_dir, "8"))["frozen"] is True
  assert sorted(os.listdir(export_dir)) == ["1", "7", "8"]
  assert Path(exported, "saved_model.pb").stat().st_mtime_ns == before
  assert inference.resolve_model(export_dir) == os.path.join(export_dir, "8")


def test_a_failed_export_leaves_the_earlier_versions_intact(small_export, workdir, monkeypatch):
  """The disk fills while the SavedModel is written: no new version, no debris, v1 serves."""
  import errno
  import keras
  base = os.path.dirname(small_export)
  before = sorted(os.listdir(base))
  # ExportArchive() returns an instance of the backend's own subclass: patch that one.
  archive_class = type(keras.export.ExportArchive())
  write_out = archive_class.write_out

  def write_then_fill(self, path, **kwargs):
    write_out(self, path, **kwargs)  # Most of the version is on disk, in the hidden folder...
    raise OSError(errno.ENOSPC, "No space left on device")  # ...when the disk fills.

  monkeypatch.setattr(archive_class, "write_out", write_then_fill)
  with pytest.raises(OSError, match="No space left"):
    serving.export_savedmodel(workdir, base)
  assert sorted(os.listdir(base)) == before == ["1"]
  assert inference.resolve_model(base) == small_export
  serve = tf.saved_model.load(small_export).signatures[serving.SIGNATURE_IMAGES]
  out = serve(images=tf.constant(photo(32, 32)[None] / 255.0, tf.float32))
  assert out["restored"].shape == (1, 32, 32, 3)


def test_restore_from_savedmodel_matches_workdir(exported, export_dir, workdir, tmp_path):
  """restore.py's library on the export (found from its base folder) and on the workdir."""
  Image.fromarray(photo(70, 110)).save(tmp_path / "c.png")
  # Default tiling: the training size (32 px for tiny), read from the export's config.
  reports = {}
  for name, model in (("export", export_dir), ("workdir", workdir)):
    reports[name] = restoring.restore_paths(model, [str(tmp_path / "c.png")],
                                          str(tmp_path / name))
    assert len(reports[name].written) == 1 and not reports[name].skipped
  a, b = (np.asarray(Image.open(tmp_path / name / "c.png"), np.float32)
          for name in ("export", "workdir"))
  assert a.shape == (70, 110, 3)
  assert np.abs(a - b).max() <= 1  # the float results agree to 1e-5; then 8-bit rounding


def test_grpc_client_builds_a_predict_request(loaded, tmp_path):
  pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed")
  # pylint: disable=g-import-not-at-top
  import serving_client
  from tensorflow_serving.apis import predict_pb2
  assert (serving_client.SIGNATURE_BYTES, serving_client.INPUT_BYTES) == (
      serving.SIGNATURE_BYTES, serving.INPUT_BYTES)
  images = [encode(photo(40, 50), "PNG"), encode(photo(48, 64), "JPEG")]
  request = serving_client.build_predict_request(images, "cascade", version=3)
  assert request.model_spec.name == "cascade"
  assert request.model_spec.signature_name == "serving_bytes"
  assert request.model_spec.version.value == 3
  tensor = request.inputs["images_bytes"]
  assert tensor.dtype == tf.string.as_datatype_enum
  assert [d.size for d in tensor.tensor_shape.dim] == [2]
  # What the server would do with it: parse the wire bytes, run the signature.
  parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
  fed = tf.make_ndarray(parsed.inputs["images_bytes"])
  assert list(fed) == images
  out = loaded.signatures["serving_bytes"](images_bytes=tf.constant(fed))
  response = predict_pb2.PredictResponse()
  for name, value in out.items():
    response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
  pngs = serving_client.pngs_from_response(response)
  assert [np.asarray(Image.open(io.BytesIO(p))).shape for p in pngs] == [(40, 50, 3), (48, 64, 3)]
  with pytest.raises(ValueError, match="no output 'missing_bytes'"):
    serving_client.pngs_from_response(response, "missing_bytes")


def test_masked_signatures_fill_the_hole_pass_the_mask_and_reject_bad_masks(loaded,
                                                                            keras_model):
  images = photo(45, 70)[None].astype(np.float32) / 255.0
  masks = np.zeros([1, 45, 70, 1], np.float32)
  masks[:, 10:30, 20:50] = 1.0
  out = loaded.signatures[serving.SIGNATURE_MASKED](images=tf.constant(images),
                                                    masks=tf.constant(masks))
  expected = keras_reference(keras_model, images, masks)
  for name in serving.OUTPUTS:
    np.testing.assert_allclose(out[name].numpy(), expected[name], atol=1e-5)
  # The mask matters: the hole is filled before the model sees it.
  plain = loaded.signatures["serving_default"](images=tf.constant(images))
  assert np.abs(plain["restored"].numpy() - out["restored"].numpy()).max() > 0.01
  # Encoded images and masks (a grey PNG, bright = hole) give the same result.
  png = tf.io.encode_png(serving.to_uint8(images[0])).numpy()
  mask_png = tf.io.encode_png(tf.cast(masks[0] * 255, tf.uint8)).numpy()
  encoded = loaded.signatures[serving.SIGNATURE_MASKED_BYTES](
      images_bytes=tf.constant([png]), masks_bytes=tf.constant([mask_png]))
  decoded = tf.io.decode_png(encoded["restored_bytes"][0]).numpy() / 255.0
  reference = keras_reference(keras_model, np.round(images * 255) / 255, masks)["restored"][0]
  assert np.abs(decoded - reference).max() <= 1 / 255 + 1e-5
  serve = loaded.signatures[serving.SIGNATURE_MASKED]
  for bad, message in [(masks[:, :40], "masks: expected one mask per image"),
                       (np.zeros([1, 45, 70, 3], np.float32), "masks: expected float32"),
                       (masks * 255, "masks: expected values in [0, 1]")]:
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
      serve(images=tf.constant(images), masks=tf.constant(bad))
  serve_bytes = loaded.signatures[serving.SIGNATURE_MASKED_BYTES]
  with pytest.raises(tf.errors.InvalidArgumentError, match="masks_bytes: expected encoded"):
    serve_bytes(images_bytes=tf.constant([png]), masks_bytes=tf.constant([b"not an image"]))
  small_mask = tf.io.encode_png(tf.zeros([40, 70, 1], tf.uint8)).numpy()
  with pytest.raises(tf.errors.InvalidArgumentError, match="masks_bytes: expected one mask"):
    serve_bytes(images_bytes=tf.constant([png]), masks_bytes=tf.constant([small_mask]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="masks_bytes: expected one mask per"):
    serve_bytes(images_bytes=tf.constant([png, png]), masks_bytes=tf.constant([mask_png]))


def test_self_ensemble_export_matches_keras_and_is_recorded(workdir, exported, tmp_path):
  path = serving.export_savedmodel(workdir, str(tmp_path / "cascade"), self_ensemble=4)
  assert inference.read_provenance(path)["self_ensemble"] == 4
  assert inference.read_provenance(exported)["self_ensemble"] == 1
  images = photo(45, 70)[None].astype(np.float32) / 255.0  # Padded to 64 x 96: not square.
  masks = np.zeros([1, 45, 70, 1], np.float32)
  masks[:, 10:30, 20:50] = 1.0
  out = tf.saved_model.load(path).signatures[serving.SIGNATURE_MASKED](
      images=tf.constant(images), masks=tf.constant(masks))
  expected = keras_reference(inference.load_workdir_cascade(workdir, self_ensemble=4).model,
                             images, masks)
  plain = keras_reference(inference.load_workdir_cascade(workdir).model, images, masks)
  for name in serving.OUTPUTS:
    np.testing.assert_allclose(out[name].numpy(), expected[name], atol=1e-5)
  assert np.abs(expected["restored"] - plain["restored"]).max() > 1e-3
  # A SavedModel runs as exported: asking it for another ensemble is refused, naming the flag.
  with pytest.raises(ValueError, match="--self_ensemble=2: .* export.py --self_ensemble=2"):
    inference.Repairer(path, self_ensemble=2)
  with pytest.raises(ValueError, match="--self_ensemble=3"):
    serving.export_savedmodel(workdir, str(tmp_path / "bad"), self_ensemble=3)


def test_frozen_export_has_no_variables_and_serves_like_the_variable_one(workdir, exported,
                                                                         loaded, tmp_path):
  path = serving.export_savedmodel(workdir, str(tmp_path / "cascade"), freeze=True)
  assert inference.read_provenance(path)["frozen"] is True
  assert inference.read_provenance(exported)["frozen"] is False
  frozen = tf.saved_model.load(path)
  assert not frozen.variables and loaded.variables  # The weights are in the graph.
  images = photo(45, 70)[None].astype(np.float32) / 255.0
  masks = np.zeros([1, 45, 70, 1], np.float32)
  masks[:, 5:20, 10:40] = 1.0
  for signature, inputs in ((serving.SIGNATURE_IMAGES, {"images": images}),
                            (serving.SIGNATURE_MASKED, {"images": images, "masks": masks})):
    inputs = {name: tf.constant(value) for name, value in inputs.items()}
    got, want = frozen.signatures[signature](**inputs), loaded.signatures[signature](**inputs)
    for name in serving.OUTPUTS:
      np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), atol=1e-5,
                                 err_msg=f"{signature}: {name}")
  png = encode(photo(40, 50), "PNG")
  got = frozen.signatures[serving.SIGNATURE_BYTES](images_bytes=tf.constant([png]))
  want = loaded.signatures[serving.SIGNATURE_BYTES](images_bytes=tf.constant([png]))
  for name in serving.OUTPUTS:
    difference = (tf.io.decode_png(got[f"{name}_bytes"][0]).numpy().astype(int)
                  - tf.io.decode_png(want[f"{name}_bytes"][0]).numpy().astype(int))
    assert np.abs(difference).max() <= 1, name  # 8-bit rounding of equal floats
  # Bad input is still refused with the signature's message.
  with pytest.raises(tf.errors.InvalidArgumentError, match="expected float pixels in"):
    frozen.signatures[serving.SIGNATURE_IMAGES](images=tf.constant(images * 255.0))
  # TF Serving's session-based loader runs it too (nothing to restore).
  np.save(tmp_path / "images.npy", images)
  result = subprocess.run(
      saved_model_cli() + ["run", "--dir", path, "--tag_set", "serve", "--signature_def",
                           serving.SIGNATURE_IMAGES, "--inputs",
                           f"images={tmp_path / 'images.npy'}", "--outdir",
                           str(tmp_path / "out")],
      capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  want = loaded.signatures[serving.SIGNATURE_IMAGES](images=tf.constant(images))
  for name in serving.OUTPUTS:
    np.testing.assert_allclose(np.load(tmp_path / "out" / f"{name}.npy"), want[name].numpy(),
                               atol=1e-5, err_msg=name)
