"""Teacher forward-pass speed: images/s of each way to run MobileNet V2, side by side.

Preloaded tensors only (no decoding): this is the ceiling the label stage can reach.
Variants are measured round-robin (each round runs every variant once per batch size), so a
background load slows all of them alike; the figure is the median over rounds.

  .venv/bin/python bench/teacher_speed.py [--batch-sizes 32,64,128] [--rounds 3]
      [--intra N --inter N] [--json out.json]

Variants (all the torchvision weights of the offline teacher):
  keras-bn          tf.keras model with BatchNorm layers, in-process (like Keras' MobileNetV2)
  keras-folded      same with BN folded into the convolutions
  savedmodel-bn     SavedModel of keras-bn, called as hub.load(dir)(images)
  savedmodel-folded SavedModel of keras-folded = the offline teacher; what load_teacher
                    returns for it (nothing left to fold, so the plain call is kept)
  frozen-bn         savedmodel-bn with variables frozen into constants, nothing folded
  optimized-bn      savedmodel-bn frozen + batch norms folded in the graph: what load_teacher
                    returns for a TF Hub-style SavedModel with BN ops (the default fast path)
It also checks that every variant's top-1 equals keras-bn's on real photos and prints the
largest logit difference.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,64,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per measurement")
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TF default)")
    parser.add_argument("--variants", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    from imnet64.teacher.mobilenet_v2 import build_mobilenet_v2
    from imnet64.teacher.offline import default_weights_path, read_verified_weights

    weights = read_verified_weights(default_weights_path())
    keras_bn = build_mobilenet_v2(weights, fold_batchnorm=False)
    keras_folded = build_mobilenet_v2(weights, fold_batchnorm=True)
    tmp = Path(tempfile.mkdtemp(prefix="teacher_speed."))
    try:
        return _run(args, tf, np, weights, keras_bn, keras_folded, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tf, np, weights, keras_bn, keras_folded, tmp: Path) -> int:
    from imnet64.teacher.export import export_hub_style_saved_model
    from imnet64.teacher.loading import _load_saved_model, fold_frozen

    export_hub_style_saved_model(keras_bn, tmp / "bn")
    export_hub_style_saved_model(keras_folded, tmp / "folded")

    spec = tf.TensorSpec([None, 224, 224, 3], tf.float32)

    def keras_fn(model):
        return tf.function(lambda x: model(x, training=False), input_signature=[spec])

    variants = {
        "keras-bn": keras_fn(keras_bn),
        "keras-folded": keras_fn(keras_folded),
        "savedmodel-bn": _load_saved_model(tmp / "bn", "bn", optimize=False).logits,
        "savedmodel-folded": _load_saved_model(tmp / "folded", "folded", optimize=False).logits,
        "frozen-bn": _freeze_only(tf, fold_frozen, tmp / "bn", spec),
        "optimized-bn": _load_saved_model(tmp / "bn", "bn", optimize=True).logits,
    }
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}

    # Agreement on real photos (full size and 64x64 -> 224, as the label stage sees them).
    photos = _real_photos(tf)
    reference = (variants.get("keras-bn") or keras_fn(keras_bn))(photos).numpy()
    agreement = {}
    for name, fn in variants.items():
        out = fn(photos).numpy()
        agreement[name] = {
            "top1_equal": int((out.argmax(1) == reference.argmax(1)).sum()),
            "images": len(out),
            "max_abs_logit_diff": float(np.abs(out - reference).max()),
        }

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    data = tf.random.stateless_uniform([max(batch_sizes), 224, 224, 3], seed=(1, 2))
    rates: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in variants}
    # CPU-seconds per image (all threads): less disturbed by other processes than wall time.
    cpu_cost: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes}
                                                   for n in variants}
    for fn in variants.values():  # warm up: trace + first-run allocation for every shape
        for b in batch_sizes:
            fn(data[:b]).numpy()
    for _ in range(args.rounds):
        for b in batch_sizes:
            for name, fn in variants.items():
                x = data[:b]
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(args.batches):
                    fn(x).numpy()
                rates[name][b].append(b * args.batches / (time.perf_counter() - start))
                cpu_cost[name][b].append((time.process_time() - cpu_start) / (b * args.batches))

    from imnet64.cluster.machine import machine_line

    print(f"machine: {machine_line()}")
    print(f"threads intra={args.intra or 'default'} inter={args.inter or 'default'}; "
          f"images/s (median | best of {args.rounds} rounds x {args.batches} batches), "
          f"CPU ms per image (median)")
    print(f"{'variant':18s}" + "".join(f"{'batch ' + str(b):>22s}" for b in batch_sizes)
          + "   top-1 = keras-bn   max |dlogit|")
    results = {}
    for name in variants:
        med = {b: statistics.median(rates[name][b]) for b in batch_sizes}
        best = {b: max(rates[name][b]) for b in batch_sizes}
        cpu_ms = {b: 1000 * statistics.median(cpu_cost[name][b]) for b in batch_sizes}
        agr = agreement[name]
        print(f"{name:18s}"
              + "".join(f"{med[b]:7.1f} |{best[b]:6.1f} |{cpu_ms[b]:5.1f}" for b in batch_sizes)
              + f"   {agr['top1_equal']:>3d}/{agr['images']:<3d}          "
              f"{agr['max_abs_logit_diff']:.2e}")
        results[name] = {"images_per_s_median": med, "images_per_s_best": best,
                         "cpu_ms_per_image": cpu_ms, **agr}
    if "keras-bn" in rates:
        base = max(statistics.median(v) for v in rates["keras-bn"].values())
        for name in variants:
            top = max(statistics.median(v) for v in rates[name].values())
            print(f"  {name:18s} {top:6.1f} images/s at its best batch size = "
                  f"{top / base:.2f}x keras-bn")
    if args.json:
        from imnet64.atomic import write_json

        write_json(args.json, {"threads": {"intra": args.intra, "inter": args.inter},
                               "rounds": args.rounds, "batches": args.batches,
                               "variants": results})
    return 0


def _freeze_only(tf, fold_frozen, path, spec):
    module = tf.saved_model.load(str(path))
    concrete = tf.function(lambda x: module(x)).get_concrete_function(spec)
    fn, _ = fold_frozen(concrete, spec, fold=False, min_folded=0)
    fn._module = module  # keep it alive
    return fn


def _real_photos(tf):
    """Real photos from packages, full size and after 64x64 down-scaling, at 224x224."""
    from imnet64.pipeline.sample_images import PHOTOS, load_photo

    import numpy as np

    images = []
    for package, name in PHOTOS:
        photo = np.asarray(load_photo(package, name), np.float32) / 255.0
        full = tf.image.resize(photo, (224, 224))
        small = tf.image.resize(tf.image.resize(photo, (64, 64)), (224, 224))
        images += [full, small]
    return tf.stack(images)


if __name__ == "__main__":
    sys.exit(main())
