"""Grad-CAM (Selvaraju et al., 2017) for the classifiers of ``all_tf.models``.

The heatmap of class c is ``relu(sum_k alpha_k A_k)`` where ``A`` is the last convolutional
feature map (B, h, w, K) and ``alpha_k`` the spatial mean of ``d y_c / d A_k``. ``y_c`` is the
class *logit* when the model ends in a softmax ``Dense`` layer (recomputed from that layer's
input and weights, so the softmax does not flatten the gradient), else the probability.

The feature layer is the last layer of the top-level graph whose output is a 4-D map: in a
flat graph the last conv/CBAM/activation before pooling, in a nested one the backbone
sub-model itself. ``all_tf.models.last_conv_layer_name`` is used when it exists.

Example:
    >>> import numpy as np, keras
    >>> from all_tf.evaluation.gradcam import grad_cam
    >>> x = keras.Input((32, 32, 3))
    >>> h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    >>> y = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    >>> heat, cls, probs = grad_cam(keras.Model(x, y), np.random.rand(2, 32, 32, 3))
    >>> heat.shape, float(heat.min()) >= 0.0, float(heat.max()) <= 1.0
    ((2, 32, 32), True, True)
"""

from __future__ import annotations

import numpy as np


def find_feature_layer(model) -> str:
    """Name of the top-level layer whose output is the last 4-D feature map of ``model``."""
    try:
        from all_tf.models import last_conv_layer_name
    except ImportError:
        last_conv_layer_name = None
    if last_conv_layer_name is not None:
        try:
            name = last_conv_layer_name(model)
            model.get_layer(name)  # must be reachable from the top-level graph
            return name
        except Exception:  # not an all_tf model (no pooling layer of that name): search
            pass
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and not layer.__class__.__name__ == "InputLayer":
            return layer.name
    raise ValueError(f"model {model.name!r} has no 4-D feature map layer for Grad-CAM")


def _output_in_graph(model, layer):
    """The output tensor of ``layer`` as called inside ``model``'s top-level graph.

    For a nested sub-model ``layer.output`` is the sub-model's own internal tensor, not the
    one produced where the outer model calls it, so the call nodes are searched as well.
    """
    import keras

    candidates = [layer.output] if not isinstance(layer, keras.Model) else []
    for node in getattr(layer, "_inbound_nodes", []):
        candidates.extend(node.output_tensors[:1])
    for tensor in candidates:
        try:
            keras.Model(model.inputs, tensor)
            return tensor
        except ValueError:
            continue
    raise ValueError(f"layer {layer.name!r} is not connected to the inputs of {model.name!r}")


def _logit_head(model):
    """(dense_layer, True) when the model's output comes from a softmax Dense, else (None, False)."""
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense):
        act = keras.activations.serialize(last.activation)
        name = act if isinstance(act, str) else act.get("config", {}).get("name", act)
        if name == "softmax":
            return last, True
    return None, False


def grad_cam(model, images, class_index=None, layer_name: str | None = None):
    """Grad-CAM heatmaps for a batch.

    Args:
        model: a Keras classifier taking float32 (B, S, S, 3) in [0, 1] and returning
            probabilities (B, C).
        images: float array (B, S, S, 3) in [0, 1], already preprocessed as for the model.
        class_index: int, int array (B,), or None for each image's predicted class.
        layer_name: feature layer (default: :func:`find_feature_layer`).

    Returns:
        ``(heatmaps, class_index, probs)``: float32 (B, S, S) in [0, 1] (each map scaled by its
        own maximum; all zero when no location supports the class), int (B,), float32 (B, C).
    """
    import keras
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got {images.shape}")
    layer_name = layer_name or find_feature_layer(model)
    feature = _output_in_graph(model, model.get_layer(layer_name))
    dense, has_logits = _logit_head(model)
    outputs = [feature, dense.input if has_logits else model.output]
    grad_model = keras.Model(model.inputs, outputs)

    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        fmap, head = grad_model(x, training=False)
        if has_logits:
            scores = tf.matmul(tf.cast(head, tf.float32), tf.cast(dense.kernel, tf.float32))
            if dense.use_bias:
                scores = scores + tf.cast(dense.bias, tf.float32)
            probs = tf.nn.softmax(scores)
        else:
            scores = probs = tf.cast(head, tf.float32)
        if class_index is None:
            cls = tf.argmax(probs, axis=1, output_type=tf.int32)
        else:
            cls = tf.broadcast_to(tf.constant(class_index, tf.int32), [len(images)])
        target = tf.gather(scores, cls, axis=1, batch_dims=1)
    grads = tape.gradient(target, fmap)
    fmap = tf.cast(fmap, tf.float32)
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam = np.divide(cam, peak[:, None, None], out=np.zeros_like(cam), where=peak[:, None, None] > 0)
    size = images.shape[1:3]
    heat = np.stack([_resize(c, size) for c in cam]).astype(np.float32)
    return np.clip(heat, 0.0, 1.0), cls.numpy(), probs.numpy()


def _resize(cam: np.ndarray, size) -> np.ndarray:
    import cv2

    return cv2.resize(cam, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def overlay_heatmap(rgb, heatmap, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap onto an image.

    Args:
        rgb: uint8 (H, W, 3) or float (H, W, 3) in [0, 1].
        heatmap: float (h, w) in [0, 1]; resized to (H, W) if needed.
        alpha: heatmap weight in [0, 1].
        colormap: a matplotlib colormap name.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    from matplotlib import colormaps

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != rgb.shape[:2]:
        heatmap = _resize(heatmap, rgb.shape[:2])
    colour = colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colour
    return np.clip(out, 0, 255).round().astype(np.uint8)


def gradcam_items(model, cfg, pairs, per_class: int = 2, alpha: float = 0.4,
                  class_names=None) -> list[dict]:
    """Grad-CAM overlays for the first ``per_class`` readable images of each label in ``pairs``.

    The model sees ``cfg``'s preprocessing; the overlay is drawn on the resized RGB image (not
    on the colour-space input). In crop mode the image's largest nucleus crop is used.

    Args:
        model: a Keras classifier.
        cfg: the model's :class:`all_tf.config.Config`.
        pairs: ``(path, label)`` in the order to pick from; label None for unlabelled images
            (grouped together, ``true`` shown as ``?``). Unreadable files are skipped.
        per_class: images per label.
        alpha: heatmap weight in [0, 1].
        class_names: names of the model's outputs (default :data:`all_tf.CLASS_NAMES`).

    Returns:
        dicts with ``overlay`` (uint8 RGB), ``true``, ``pred``, ``confidence``, ``empty``
        (the map is all zero: no location raises the predicted class), ``path``; labelled
        images first, by label.
    """
    from all_tf import CLASS_NAMES
    from all_tf.data.inputs import input_views, view_preprocess_config
    from all_tf.io import ImageReadError, read_image
    from all_tf.preprocessing import preprocess_image, resize_to

    class_names = class_names or CLASS_NAMES
    pre = view_preprocess_config(cfg)
    chosen: dict[int | None, list] = {}
    picked = []  # (label, item)
    for path, label in pairs:
        if len(chosen.setdefault(label, [])) >= per_class:
            continue
        try:
            rgb = read_image(path)
        except ImageReadError:
            continue
        rgb = input_views(rgb, cfg, max_crops=1)[0]  # crop mode: the largest nucleus
        heat, cls, probs = grad_cam(model, preprocess_image(rgb, pre)[None])
        chosen[label].append(path)
        picked.append((label, {
            "overlay": overlay_heatmap(resize_to(rgb, pre.image_size), heat[0], alpha),
            "true": "?" if label is None else class_names[label],
            "pred": class_names[int(cls[0])],
            "confidence": float(probs[0].max()),
            "empty": bool(heat[0].max() == 0.0),
            "path": str(path),
        }))
    picked.sort(key=lambda pair: (pair[0] is None, pair[0] or 0))  # stable: file order kept
    return [item for _, item in picked]


def gradcam_for_run(run_dir, per_class: int = 2, part: str = "test", alpha: float = 0.4,
                    class_names=None) -> list[dict]:
    """:func:`gradcam_items` for the first ``per_class`` images of each class of a run's split
    part (``train``, ``val`` or ``test``), with the run's model and config."""
    from all_tf.evaluation.runs import load_config, load_model, load_split

    cfg = load_config(run_dir)
    split = load_split(run_dir, cfg.data_dir)
    return gradcam_items(load_model(run_dir), cfg,
                         [(r.path, r.label) for r in getattr(split, part)], per_class, alpha,
                         class_names)
