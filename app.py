"""A web page where a person paints the damage on a photo and gets it repaired.

    pip install -r requirements-app.txt
    python app.py                                # the shipped model, http://127.0.0.1:7860
    python app.py --model=exports/cascade --port=8080
    python app.py --workdir=runs/photo --host=0.0.0.0

Upload a photo (or pick a sample), paint over the damage, tick "Also remove
blur and noise" to repair the whole photo, press Repair, compare before and
after, download the full-resolution PNG. The page runs the same model and
code as restore.py (`cascade_tf.webapp`); large photos are repaired in
tiles; one model is loaded per process and requests are queued.
"""

import sys

from absl import app
from absl import flags

from cascade_tf import pretrained
from cascade_tf import webapp

flags.DEFINE_string("model", None, "'pretrained' (default: the shipped cascade), a SavedModel "
                    "version folder or export folder.")
flags.DEFINE_string("workdir", None, "A training workdir, instead of --model.")
flags.DEFINE_integer("port", 7860, "Port of the page.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; "
                    "the page has no login).")
flags.DEFINE_integer("max_pixels", webapp.DEFAULT_MAX_PIXELS,
                     "Photos with more pixels get a message instead of a repair.")
flags.DEFINE_string("samples_dir", None, "Where the sample photos are written (default: a "
                    "temporary folder).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.model and FLAGS.workdir:
    raise app.UsageError("Pass one of --model or --workdir.")
  model = FLAGS.model or FLAGS.workdir or pretrained.NAME
  try:
    repair = webapp.PhotoRepair(model, FLAGS.max_pixels)
  except (ValueError, FileNotFoundError) as e:
    print(f"app.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  import tempfile  # pylint: disable=g-import-not-at-top
  samples = webapp.sample_paths(FLAGS.samples_dir or tempfile.mkdtemp(prefix="cascade_tf_samples-"))
  page = webapp.build_app(repair, samples)
  print(f"Model: {model}. Open http://{FLAGS.host}:{FLAGS.port} in a browser.", flush=True)
  page.queue(default_concurrency_limit=1).launch(server_name=FLAGS.host, server_port=FLAGS.port,
                                                 show_error=True)


if __name__ == "__main__":
  app.run(main)
