"""Bisect the full-int8 + XNNPACK crash of EfficientNetV2-S + CBAM, one process per step.

The reported problem: a full-int8 EfficientNetV2-S + CBAM converted, but LiteRT's default
XNNPACK delegate crashed in ``allocate_tensors`` ("double free or corruption"; tf.lite's
interpreter said a node failed to prepare), while plain EfficientNetV2-S ran. This script
builds the model with different CBAM implementations (the project's, and variants that drop
or replace one op at a time), converts each to full int8 calibrated on real images, and runs
each file in a fresh process twice: with the default delegates (XNNPACK) and with the
builtin kernels only (no delegate). A crash (abort, segfault) is recorded as that variant's status.

Variants (``--variants``):

* ``current``      all_tf.models.CBAM as it is in the tree
* ``none``         plain EfficientNetV2-S (placement "none")
* ``dense_mlp``    shared MLP as Dense layers on pooled (B, C) vectors, gate expanded to
                   (B, 1, 1, C) (FULLY_CONNECTED + RESHAPE in TFLite)
* ``conv_mlp``     shared MLP as 1x1 convolutions on keepdims-pooled (B, 1, 1, C) maps
* the rest are ``conv_mlp`` with one change:
* ``avg_only``     channel attention from average pooling only (no REDUCE_MAX over space)
* ``no_concat``    spatial attention as conv(mean) + conv(max) (same function, no CONCATENATION)
* ``mean_only``    spatial attention from the channel mean only (no REDUCE_MAX over channels)
* ``hard_sigmoid`` hard-sigmoid gates instead of LOGISTIC

Example (about a minute per variant at 224 px on 2 cores):
    python scripts/repro_int8_xnnpack.py --size 224 --placement stages --out /tmp/int8_bisect
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

VARIANTS = ("current", "none", "dense_mlp", "conv_mlp", "avg_only", "no_concat", "mean_only",
            "hard_sigmoid")
REPO = Path(__file__).resolve().parents[1]


def _variant_class(variant: str):
    """A CBAM written out in full for one variant (independent of all_tf.models.CBAM's internals)."""
    import keras
    from keras import layers, ops

    class Variant(layers.Layer):
        def __init__(self, reduction: int = 16, kernel_size: int = 7, **kwargs):
            super().__init__(**kwargs)
            self.reduction, self.kernel_size = reduction, kernel_size

        def build(self, input_shape):
            channels = int(input_shape[-1])
            hidden = min(channels, max(8, channels // self.reduction))
            if variant == "dense_mlp":
                self.fc1 = layers.Dense(hidden, activation="relu")
                self.fc2 = layers.Dense(channels)
                self.fc1.build((None, channels))
                self.fc2.build((None, hidden))
            else:
                self.fc1 = layers.Conv2D(hidden, 1, activation="relu")
                self.fc2 = layers.Conv2D(channels, 1)
                self.fc1.build((None, 1, 1, channels))
                self.fc2.build((None, 1, 1, hidden))
            self.spatial_conv = layers.Conv2D(1, self.kernel_size, padding="same")
            self.spatial_conv.build((None, None, None, 2))

        def _gate(self, x):
            return ops.hard_sigmoid(x) if variant == "hard_sigmoid" else ops.sigmoid(x)

        def _channel_gate(self, x):
            if variant == "dense_mlp":  # pooled (B, C), Dense, then expand_dims to (B, 1, 1, C)
                logits = (self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
                          + self.fc2(self.fc1(ops.max(x, axis=(1, 2)))))
                return ops.expand_dims(ops.expand_dims(self._gate(logits), 1), 1)
            logits = self.fc2(self.fc1(ops.mean(x, axis=(1, 2), keepdims=True)))
            if variant != "avg_only":
                logits = logits + self.fc2(self.fc1(ops.max(x, axis=(1, 2), keepdims=True)))
            return self._gate(logits)

        def _spatial_gate(self, x):
            avg = ops.mean(x, axis=-1, keepdims=True)
            if variant == "mean_only":
                return self._gate(self.spatial_conv(ops.concatenate([avg, avg], axis=-1)))
            mx = ops.max(x, axis=-1, keepdims=True)
            if variant == "no_concat":  # the same 7x7 conv, split by input channel
                k = self.spatial_conv.kernel
                return self._gate(ops.conv(avg, k[:, :, :1, :], padding="same")
                                  + ops.conv(mx, k[:, :, 1:, :], padding="same")
                                  + self.spatial_conv.bias)
            return self._gate(self.spatial_conv(ops.concatenate([avg, mx], axis=-1)))

        def call(self, x):
            x = x * self._channel_gate(x)
            return x * self._spatial_gate(x)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "reduction": self.reduction,
                    "kernel_size": self.kernel_size}

    keras.saving.register_keras_serializable(package="all_tf_repro", name=f"CBAM_{variant}")(Variant)
    return Variant


def _calibration(size: int, count: int, data: str | None):
    import numpy as np

    from all_tf.config import PreprocessConfig
    from all_tf.export.common import collect_inputs
    from all_tf.export.tflite import calibration_set
    from all_tf.io import read_image

    root = data or str(REPO / "all_tf" / "sample_data" / "all4")
    pairs = collect_inputs([root])
    idx = np.random.default_rng(0).permutation(len(pairs))[:count]
    images = [read_image(pairs[i][0]) for i in sorted(idx)]

    class _Cfg:  # calibration_set only reads .preprocess
        preprocess = PreprocessConfig(image_size=size)

    return calibration_set(images, _Cfg(), count=count)


def worker_convert(variant: str, size: int, placement: str, out: Path, count: int, data: str | None):
    import all_tf.models.backbones as backbones
    from all_tf.export.tflite import _saved_model_for_conversion, convert
    from all_tf.models import build_model

    if variant not in ("current", "none"):
        backbones.CBAM = _variant_class(variant)
    name = "efficientnetv2s" if variant == "none" else "efficientnetv2s_cbam"
    model = build_model(name, image_size=size, cbam_placement=placement)
    calibration = _calibration(size, count, data)
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        saved = _saved_model_for_conversion(model, size, work)
        out.write_bytes(convert(saved, "int8", calibration))


def worker_run(path: Path, xnnpack: bool):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).integers(-128, 128, inp["shape"], dtype=np.int8)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    start = time.perf_counter()
    for _ in range(5):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
    ms = (time.perf_counter() - start) * 200
    ops = len(interp._get_ops_details())
    print(json.dumps({"ms": round(ms, 2), "ops": ops}))


def _status(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode == 0:
        return "ok"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        return f"crash ({name})"
    tail = [line for line in proc.stderr.strip().splitlines() if "rror" in line][-1:]
    return f"error: {tail[0][:120] if tail else proc.returncode}"


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "error: timed out")


@click.command()
@click.option("--size", type=int, default=224, show_default=True, help="Input size in px.")
@click.option("--placement", default="stages", show_default=True,
              help="CBAM placement (stages, every_block, final).")
@click.option("--variants", default=",".join(VARIANTS), show_default=True,
              help="Comma-separated variants (see the module docstring).")
@click.option("--calibration-data", help="Dataset root or folder of real images "
              "(default: the shipped sample).")
@click.option("--calibration-count", type=int, default=32, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("int8_bisect"), show_default=True)
@click.option("--worker", type=click.Choice(["convert", "run", "run-ref"]), hidden=True)
@click.option("--variant", hidden=True)
@click.option("--file", "file_", type=click.Path(path_type=Path), hidden=True)
def main(size, placement, variants, calibration_data, calibration_count, out, worker, variant, file_):
    """Convert EfficientNetV2-S + CBAM variants to full int8 and run each under XNNPACK."""
    if worker == "convert":
        return worker_convert(variant, size, placement, file_, calibration_count, calibration_data)
    if worker in ("run", "run-ref"):
        return worker_run(file_, xnnpack=worker == "run")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in [s.strip() for s in variants.split(",") if s.strip()]:
        if v not in VARIANTS:
            raise click.BadParameter(f"unknown variant {v!r}", param_hint="--variants")
        path = out / f"{v}_{placement}_{size}_int8.tflite"
        common = ["--size", str(size), "--placement", placement,
                  "--calibration-count", str(calibration_count)]
        if calibration_data:
            common += ["--calibration-data", calibration_data]
        start = time.time()
        conv = _run(["--worker", "convert", "--variant", v, "--file", str(path), *common], 1800)
        row = {"variant": v, "convert": _status(conv), "convert_s": round(time.time() - start)}
        if conv.returncode == 0:
            for mode in ("run", "run-ref"):
                proc = _run(["--worker", mode, "--file", str(path)], 600)
                key = "xnnpack" if mode == "run" else "builtin"
                row[key] = _status(proc)
                if proc.returncode == 0:
                    info = json.loads(proc.stdout.strip().splitlines()[-1])
                    row[f"{key}_ms"], row["ops"] = info["ms"], info["ops"]
        rows.append(row)
        click.echo(json.dumps(row))
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    click.echo("\n| variant | ops | convert | XNNPACK | ms | builtin kernels, no delegate | ms |")
    click.echo("|---|---|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['variant']} | {r.get('ops', '–')} | {r['convert']} | "
                   f"{r.get('xnnpack', '–')} | {r.get('xnnpack_ms', '–')} | "
                   f"{r.get('builtin', '–')} | {r.get('builtin_ms', '–')} |")


if __name__ == "__main__":
    main()
