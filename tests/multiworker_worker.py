"""One worker of a two-process MultiWorkerMirroredStrategy run, for tests/test_multiworker.py.

    python tests/multiworker_worker.py DIR PORT0,PORT1 INDEX

Sets TF_CONFIG for worker INDEX of a two-worker cluster on 127.0.0.1, then
(one strategy serves both: a process configures its collectives once)

* builds the `pretrain` stage from DIR/config.json, loads the
  generator's weights from DIR/init (weights_io), applies one update on
  the global batch DIR/batch.npz (4 images; worker i gets images 2i and
  2i+1) and writes the weights to DIR/after-<INDEX>.npz;
* runs `loop.train(config, "pretrain", DIR/workdir)` with DIR/loop.json as
  the config (train.strategy=multiworker) and prints the result as JSON;
* runs a long stage (DIR/stop.json) into DIR/workdir-stop until a signal
  to either worker stops both, prints where it stopped as JSON and exits
  with 128 + the signal's number, as `train.py` does.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(directory, ports, index):
  ports = ports.split(",")
  os.environ["TF_CONFIG"] = json.dumps({
      "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
      "task": {"type": "worker", "index": int(index)}})
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from cascade_tf import config as config_lib
  from cascade_tf import runtime
  from cascade_tf import weights_io
  from cascade_tf.training import loop
  from cascade_tf.training import stages
  from cascade_tf.training import steps

  with open(os.path.join(directory, "config.json")) as f:
    cfg = config_lib.from_json(f.read())
  strategy = runtime.make_strategy("multiworker")
  with strategy.scope():
    wired = stages.build_stage(cfg, "pretrain", global_batch_size=4)
    generator = wired.nets["generator"]
    weights_io.load_weights(generator, os.path.join(directory, "init"), "generator")
    optimizer = keras.optimizers.RMSprop(1e-3)
    optimizer.build(wired.main.variables)
  step = steps.make_step(strategy, wired.main, optimizer)
  with np.load(os.path.join(directory, "batch.npz")) as data:
    batch = {k: data[k] for k in ("corrupted", "clean")}

  def per_worker(context):
    start = 2 * context.input_pipeline_id
    return tf.data.Dataset.from_tensors({k: v[start:start + 2] for k, v in batch.items()})

  dataset = strategy.distribute_datasets_from_function(per_worker)
  values = step(next(iter(dataset)))
  np.savez(os.path.join(directory, f"after-{index}.npz"), *[v.numpy() for v in generator.weights],
           mse=float(values["mse"]))

  with open(os.path.join(directory, "loop.json")) as f:
    loop_cfg = config_lib.from_json(f.read())
  [result] = loop.train(loop_cfg, "pretrain", os.path.join(directory, "workdir"))
  print(json.dumps({"step": result.step, "losses": result.last_losses}), flush=True)

  with open(os.path.join(directory, "stop.json")) as f:
    stop_cfg = config_lib.from_json(f.read())
  try:
    loop.train(stop_cfg, "pretrain", os.path.join(directory, "workdir-stop"))
  except loop.Interrupted as e:
    print(json.dumps({"stopped": str(e), "checkpoint": e.checkpoint}), flush=True)
    sys.exit(128 + e.signal_number)


if __name__ == "__main__":
  main(*sys.argv[1:])
