"""Training throughput and parameter count of EfficientNetV2-S with CBAM at each placement.

Every variant is trained on the same random batch with identical settings (AdamW, categorical
cross-entropy, the chosen precision policy); after ``--warmup`` untimed steps (graph tracing,
allocator warm-up) ``--steps`` steps are timed one by one. With ``--rounds`` > 1 the variants
are measured in interleaved rounds and the median step time is reported, which evens out
load from other processes on a shared machine.

With ``--flops`` no training runs: the script prints the forward-pass FLOPs of one image per
placement instead (TensorFlow's graph profiler on the frozen inference graph; a multiply-add
counts as 2), a cost measure independent of machine load.

Example:
    python scripts/benchmark_cbam.py --image-size 128 --batch-size 16 --steps 10
    python scripts/benchmark_cbam.py --flops
"""

from __future__ import annotations

import os
import statistics
import time

import click

PLACEMENTS = ("none", "final", "stages", "every_block")


@click.command()
@click.option(
    "--model",
    "model_name",
    default="efficientnetv2s_cbam",
    show_default=True,
    help="A name from all_tf.models.MODEL_NAMES (placements apply to *_cbam names only).",
)
@click.option(
    "--placements",
    default=",".join(PLACEMENTS),
    show_default=True,
    help="Comma-separated CBAM placements to compare.",
)
@click.option("--image-size", default=224, show_default=True, help="Input side in pixels.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--steps", default=10, show_default=True, help="Timed training steps per round.")
@click.option("--warmup", default=3, show_default=True, help="Untimed steps before timing.")
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    help="Interleaved measurement rounds; the median step time is reported.",
)
@click.option(
    "--precision",
    type=click.Choice(["mixed_bfloat16", "float32", "mixed_float16"]),
    default="mixed_bfloat16",
    show_default=True,
    help="Keras dtype policy.",
)
@click.option(
    "--jit/--no-jit",
    default=False,
    show_default=True,
    help="XLA-compile the train step (slow to compile on CPU).",
)
@click.option("--flops", is_flag=True, help="Only count forward FLOPs per image; no training.")
def main(
    model_name, placements, image_size, batch_size, steps, warmup, rounds, precision, jit, flops
):
    """Print a Markdown table: placement, CBAM layers, parameters, images/s, cost vs none.

    With --flops: placement, CBAM layers, parameters, forward GFLOPs per image.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from all_tf.models import CBAM, build_model

    placements = [p.strip() for p in placements.split(",") if p.strip()]
    if flops:
        _print_flops(model_name, placements, image_size)
        return
    keras.config.set_dtype_policy(precision)
    rng = np.random.default_rng(0)
    # NumPy batches work on every Keras backend (TensorFlow, JAX).
    x = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[np.arange(batch_size) % 4]

    models, info = {}, {}
    for placement in placements:
        keras.utils.set_random_seed(0)
        model = build_model(model_name, image_size=image_size, cbam_placement=placement)
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy", jit_compile=jit
        )
        t0 = time.perf_counter()
        for _ in range(warmup):
            model.train_on_batch(x, y)
        info[placement] = {
            "cbam": sum(isinstance(layer, CBAM) for layer in model.layers),
            "params": model.count_params(),
            "warmup_s": time.perf_counter() - t0,
            "times": [],
        }
        models[placement] = model
        click.echo(f"# built {placement}: warm-up {info[placement]['warmup_s']:.1f} s", err=True)

    for r in range(rounds):
        for placement in placements:
            model = models[placement]
            for _ in range(steps):
                t0 = time.perf_counter()
                float(model.train_on_batch(x, y))  # float() waits for the step to finish
                info[placement]["times"].append(time.perf_counter() - t0)
            med = statistics.median(info[placement]["times"][-steps:])
            click.echo(f"# round {r + 1} {placement}: median step {med:.3f} s", err=True)

    base = statistics.median(info["none"]["times"]) if "none" in info else None
    click.echo(
        f"\n{model_name}, {image_size} px, batch {batch_size}, {precision}, "
        f"jit_compile={jit}, {rounds} x {steps} timed steps after {warmup} warm-up\n"
    )
    click.echo(
        "| placement | CBAM layers | parameters | step (s, median) | images/s | "
        "throughput vs none |"
    )
    click.echo("| --- | ---: | ---: | ---: | ---: | ---: |")
    for placement in placements:
        step = statistics.median(info[placement]["times"])
        rel = f"{(base / step - 1) * 100:+.1f} %" if base else "n/a"
        click.echo(
            f"| {placement} | {info[placement]['cbam']} | {info[placement]['params']:,} | "
            f"{step:.3f} | {batch_size / step:.1f} | {rel} |"
        )


def _print_flops(model_name, placements, image_size):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from all_tf.models import CBAM, build_model

    click.echo(f"\n{model_name}, {image_size} px, float32 forward pass of one image\n")
    click.echo("| placement | CBAM layers | parameters | GFLOPs | vs none |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    base = None
    for placement in placements:
        model = build_model(model_name, image_size=image_size, cbam_placement=placement)
        spec = tf.TensorSpec([1, image_size, image_size, 3], tf.float32)
        fn = tf.function(lambda x, m=model: m(x, training=False)).get_concrete_function(spec)
        graph = convert_variables_to_constants_v2(fn).graph
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        gflops = tf.compat.v1.profiler.profile(graph=graph, options=opts).total_float_ops / 1e9
        base = gflops if placement == "none" else base
        rel = f"{(gflops / base - 1) * 100:+.2f} %" if base else "n/a"
        cbams = sum(isinstance(layer, CBAM) for layer in model.layers)
        click.echo(f"| {placement} | {cbams} | {model.count_params():,} | {gflops:.3f} | {rel} |")


if __name__ == "__main__":
    main()
