"""Sends hostile and malformed images to an export, loaded the way TF Serving loads it.

    python scripts/fuzz_export.py exports/cascade/1
    python scripts/fuzz_export.py exports/cascade/1 --cases=1000 --seed=3 --json=fuzz.json

The SavedModel is loaded with TensorFlow's session-based loader (the
MetaGraph's saver restores the variables, signatures run in a Session), as
TF Serving's `LoadSavedModel` and `saved_model_cli run` do. Every signature
whose inputs are strings (`serving_bytes`, `serving_masked_bytes`, which
gets each case as both its images and their masks, and any later bytes
signature) is fed, one request per case:

* valid JPEGs and PNGs (RGB, grey, RGBA, 16-bit, odd sizes), alone and
  batched;
* empty, random, truncated and bit-flipped bytes, and other formats;
* images below the minimum size;
* headers that declare huge images (20000 x 20000 PNG, 65000 x 65000
  JPEG) with little data behind them, and images just over the export's
  own `max_pixels`.

Each request must end as a valid PNG per image (`ok`) or an
InvalidArgumentError (`invalid`); anything else (another error) is counted
as `failed` and the exit status is 1. A crash of the process (the thing
this guards against) ends it without a summary, so run it in a subprocess
when a crash must not take the caller down (tests/test_serving.py does).
The summary (counts per kind of case and outcome) is printed as a table
and written to --json.
"""

import argparse
import collections
import io
import json
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import cascade_tf  # noqa: F401  Before TensorFlow: the package's oneDNN default.
import numpy as np
from PIL import Image
import tensorflow as tf

from cascade_tf import inference


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, **options)
  return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_declaring(width: int, height: int, rng: np.random.Generator) -> bytes:
  """A PNG whose header declares width x height (8-bit RGB) and whose data is small."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  # A valid start of the zlib stream of an all-zero image, then the end.
  data = zlib.compress(b"\0" * 4096)
  return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data)
          + png_chunk(b"IEND", b"") + rng.bytes(int(rng.integers(0, 64))))


def jpeg_declaring(width: int, height: int, base: bytes) -> bytes:
  """A valid small JPEG whose frame header (SOF0) is rewritten to width x height."""
  data = bytearray(base)
  sof = data.find(b"\xff\xc0")
  if sof < 0:
    raise ValueError("the base JPEG has no baseline SOF0 marker")
  # FFC0, length (2), precision (1), height (2), width (2).
  data[sof + 5:sof + 7] = struct.pack(">H", height)
  data[sof + 7:sof + 9] = struct.pack(">H", width)
  return bytes(data)


def make_cases(count: int, seed: int, max_pixels: int, min_side: int) -> list[tuple[str, list]]:
  """(kind, [image bytes, ...]) pairs: `count` cases in all, deterministic for `seed`."""
  rng = np.random.default_rng(seed)

  def photo(height, width):
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                     (x + y) % 256], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)

  side = max(min_side, 40)
  valid = {
      "png_rgb": encode(photo(side, side + 10), "PNG"),
      "jpeg_rgb": encode(photo(side + 24, side + 8), "JPEG", quality=90),
      "png_grey": encode(photo(side, side)[..., 0], "PNG"),
      "png_rgba": encode(np.dstack([photo(side, side), photo(side, side)[..., :1]]), "PNG"),
      "png_16bit": encode((photo(side, side)[..., 0].astype(np.uint16) * 257), "PNG"),
      "jpeg_progressive": encode(photo(side, side + 1), "JPEG", quality=75, progressive=True),
  }
  fixed = [(f"valid/{name}", [data]) for name, data in valid.items()]
  fixed.append(("valid/batch_of_3", [valid["png_rgb"], valid["jpeg_rgb"], valid["png_grey"]]))
  fixed += [
      ("empty", [b""]),
      ("other_format/gif", [encode(photo(side, side), "GIF")]),
      ("other_format/bmp", [encode(photo(side, side), "BMP")]),
      ("other_format/text", [b"definitely not an image"]),
      ("too_small/png_1x1", [encode(photo(1, 1), "PNG")]),
      ("too_small/jpeg_8x8", [encode(photo(8, 8), "JPEG")]),
      ("too_small/png_below_min_side", [encode(photo(min_side - 1, 2 * min_side), "PNG")]),
      ("oversized/png_20000x20000", [png_declaring(20000, 20000, rng)]),
      ("oversized/png_2^31-1_square", [png_declaring(2 ** 31 - 1, 2 ** 31 - 1, rng)]),
      ("oversized/jpeg_65000x65000", [jpeg_declaring(65000, 65000, valid["jpeg_rgb"])]),
      ("oversized/batch_with_one_bomb", [valid["png_rgb"], png_declaring(20000, 20000, rng)]),
  ]
  if max_pixels:
    # Just over the export's own limit: one pixel row more than fits.
    width = max(min_side, int(max_pixels ** 0.5))
    height = max_pixels // width + 1
    fixed.append(("oversized/png_just_over_limit", [png_declaring(width, height, rng)]))
    fixed.append(("oversized/jpeg_just_over_limit",
                  [jpeg_declaring(width, height, valid["jpeg_rgb"])]))
  sources = [v for k, v in valid.items() if k != "png_16bit"]
  generated = []
  kinds = ("random", "truncated", "bit_flipped", "bit_flipped_header")
  for k in range(max(0, count - len(fixed))):
    kind = kinds[k % len(kinds)]
    if kind == "random":
      data = rng.bytes(int(rng.integers(1, 4096)))
      if rng.random() < 0.5:  # random data behind a real signature
        data = (b"\x89PNG\r\n\x1a\n" if rng.random() < 0.5 else b"\xff\xd8\xff") + data
    else:
      data = bytearray(sources[int(rng.integers(len(sources)))])
      if kind == "truncated":
        data = data[:int(rng.integers(1, len(data)))]
      else:
        # Flips in the first 64 bytes hit the headers (sizes, chunk lengths).
        span = 64 if kind == "bit_flipped_header" else len(data)
        for _ in range(int(rng.integers(1, 9))):
          bit = int(rng.integers(min(span, len(data)) * 8))
          data[bit // 8] ^= 1 << (bit % 8)
    generated.append((kind, [bytes(data)]))
  return fixed + generated


def string_signatures(meta_graph) -> dict:
  """{name: signature_def} of the signatures whose inputs are all strings."""
  return {name: sig for name, sig in meta_graph.signature_def.items()
          if sig.inputs and all(t.dtype == tf.string.as_datatype_enum
                                for t in sig.inputs.values())}


def run(export: str, count: int, seed: int) -> dict:
  """Loads `export` in a session, feeds every case to every bytes signature; the summary."""
  # The export's own limits, as export.py recorded them.
  provenance = inference.read_provenance(export) or {}
  max_pixels = provenance.get("max_pixels", 0)
  min_side = provenance.get("min_side_px", 32)
  cases = make_cases(count, seed, max_pixels, min_side)
  outcomes = collections.Counter()
  failures = []
  start = time.perf_counter()
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export)
    signatures = string_signatures(meta_graph)
    if not signatures:
      raise ValueError(f"{export}: no signature takes strings (expected serving_bytes).")
    decoded = tf.compat.v1.placeholder(tf.string, [])
    png_shape = tf.shape(tf.io.decode_png(decoded, channels=3))
    for name, signature in signatures.items():
      # serving_masked_bytes gets each case as the images and as their masks.
      input_names = [info.name for info in signature.inputs.values()]
      fetches = {key: info.name for key, info in signature.outputs.items()}
      for kind, images in cases:
        group = kind.split("/")[0]
        try:
          out = session.run(fetches, {name: np.array(images, dtype=object)
                                      for name in input_names})
        except tf.errors.InvalidArgumentError:
          outcomes[(name, group, "invalid")] += 1
          continue
        except Exception as e:  # pylint: disable=broad-except
          outcomes[(name, group, "failed")] += 1
          failures.append(f"{name} {kind}: {type(e).__name__}: {str(e)[:300]}")
          continue
        good = True
        for key, value in out.items():
          if len(value) != len(images):
            good = False
          for item in value:
            if not (isinstance(item, bytes) and item.startswith(b"\x89PNG")):
              good = False
              continue
            height, width, _ = session.run(png_shape, {decoded: item})
            good = good and min(height, width) >= min_side
        outcomes[(name, group, "ok" if good else "failed")] += 1
        if not good:
          failures.append(f"{name} {kind}: outputs are not one valid PNG per image")
  return {
      "export": export, "seed": seed, "cases": len(cases), "max_pixels": max_pixels,
      "signatures": sorted(signatures),
      "seconds": round(time.perf_counter() - start, 1),
      "outcomes": [{"signature": s, "kind": k, "outcome": o, "count": c}
                   for (s, k, o), c in sorted(outcomes.items())],
      "failed": failures,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("export", help="a SavedModel version folder (export.py's EXPORT_DIR/N)")
  parser.add_argument("--cases", type=int, default=300, help="cases in all (default 300)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="also write the summary here")
  args = parser.parse_args(argv)
  summary = run(args.export, args.cases, args.seed)
  print(f"{summary['cases']} cases per signature, seed {args.seed}, max_pixels "
        f"{summary['max_pixels']}, {summary['seconds']} s, session-based loader")
  print("| signature | kind | outcome | count |\n|---|---|---|---|")
  for row in summary["outcomes"]:
    print(f"| {row['signature']} | {row['kind']} | {row['outcome']} | {row['count']} |")
  for failure in summary["failed"]:
    print("FAILED", failure)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(summary, f, indent=2)
  return 1 if summary["failed"] else 0


if __name__ == "__main__":
  sys.exit(main())
