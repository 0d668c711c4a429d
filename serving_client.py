"""gRPC client for the exported cascade running in TF Serving.

    pip install tensorflow-serving-api==2.21.*
    python serving_client.py photo.jpg scan.png --server=localhost:8500 \
        --model_name=cascade --output_dir=restored

Sends the files' bytes (JPEG or PNG) to the `serving_bytes` signature in one
PredictRequest and writes the returned PNGs as OUTPUT_DIR/<name>.png (and
<name>_inpainted.png with --save_intermediate). The names of the signature,
its input and outputs are those of cascade_tf/serving.py; they are repeated
here so that this file can be copied to a client machine on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
import sys
from typing import Sequence

from absl import app
from absl import flags
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

SIGNATURE_BYTES = "serving_bytes"
INPUT_BYTES = "images_bytes"
OUTPUT_RESTORED = "restored_bytes"
OUTPUT_INPAINTED = "inpainted_bytes"


def build_predict_request(images: Sequence[bytes], model_name: str = "cascade",
                          signature_name: str = SIGNATURE_BYTES,
                          version: int | None = None) -> predict_pb2.PredictRequest:
  """A PredictRequest carrying encoded JPEG/PNG images as a string [N] tensor.

  Args:
    images: the encoded files' bytes, one per image (sizes may differ).
    model_name: TF Serving's --model_name (MODEL_NAME in the docker image).
    signature_name: the bytes signature of the export.
    version: a model version to pin; None: the server's latest.

  Raises:
    ValueError: if `images` is empty.
  """
  if not images:
    raise ValueError("build_predict_request needs at least one image.")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = version
  request.inputs[INPUT_BYTES].CopyFrom(
      tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)]))
  return request


def pngs_from_response(response: predict_pb2.PredictResponse,
                       output_name: str = OUTPUT_RESTORED) -> list[bytes]:
  """The PNG bytes of one output of a PredictResponse, one per image."""
  if output_name not in response.outputs:
    raise ValueError(f"The response has no output {output_name!r}; it has "
                     f"{sorted(response.outputs)}. Is the server running a cascade_tf export?")
  return list(response.outputs[output_name].string_val)


def restore_remote(paths: Sequence[str], server: str, output_dir: str, *,
                   model_name: str = "cascade", version: int | None = None,
                   timeout_s: float = 60.0, save_intermediate: bool = False) -> list[str]:
  """Sends `paths` to TF Serving's gRPC endpoint and writes the restored PNGs.

  Returns:
    The paths written.
  """
  images = [Path(path).read_bytes() for path in paths]
  request = build_predict_request(images, model_name, version=version)
  options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
  with grpc.insecure_channel(server, options=options) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=timeout_s)
  outputs = {"": pngs_from_response(response, OUTPUT_RESTORED)}
  if save_intermediate:
    outputs["_inpainted"] = pngs_from_response(response, OUTPUT_INPAINTED)
  os.makedirs(output_dir, exist_ok=True)
  written = []
  for suffix, pngs in outputs.items():
    for path, png in zip(paths, pngs):
      out_path = os.path.join(output_dir, f"{Path(path).stem}{suffix}.png")
      Path(out_path).write_bytes(png)
      written.append(out_path)
  return written


def _define_flags() -> None:
  # Defined only when run as a script, so that importing this module (tests,
  # notebooks) leaves absl's global flags alone.
  flags.DEFINE_string("server", "localhost:8500", "host:port of TF Serving's gRPC endpoint.")
  flags.DEFINE_string("model_name", "cascade", "The served model's name (MODEL_NAME).")
  flags.DEFINE_integer("version", None, "Model version to use (default: the latest served).")
  flags.DEFINE_string("output_dir", "restored", "Where the PNGs are written.")
  flags.DEFINE_float("timeout", 60.0, "Seconds to wait for the response.")
  flags.DEFINE_bool("save_intermediate", False, "Also write the generator's output.")


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Pass JPEG or PNG files to repair.")
  values = flags.FLAGS
  try:
    written = restore_remote(paths, values.server, values.output_dir,
                             model_name=values.model_name, version=values.version,
                             timeout_s=values.timeout, save_intermediate=values.save_intermediate)
  except grpc.RpcError as e:
    print(f"serving_client.py: {e.code().name}: {e.details()}", file=sys.stderr)
    sys.exit(1)
  print("\n".join(written))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
