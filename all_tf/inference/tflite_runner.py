"""Running a ``.tflite`` file with LiteRT: the one loop that feeds it images.

Quantised inputs and outputs are converted here, so callers pass float pixels (for an edge
file: RGB values 0-255 at model size) and get float32 probabilities.

Example:
    >>> import numpy as np
    >>> detail = {"dtype": np.int8, "quantization": (1 / 255, -128)}
    >>> quantize_input(np.array([0.0, 1.0]), detail).tolist()
    [-128, 127]
"""

from __future__ import annotations

import time

import numpy as np


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """float input -> what the interpreter's input tensor takes (int8/uint8 or float32).

    An integer input without quantisation (scale 0: the edge file's RGB uint8) takes the
    values as they are, rounded and clipped to its dtype.
    """
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    if scale == 0:
        return np.clip(np.round(x), info.min, info.max).astype(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def dequantize_output(q: np.ndarray, detail: dict) -> np.ndarray:
    """The interpreter's output tensor -> float32."""
    scale, zero = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or scale == 0:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


class TFLiteRunner:
    """One ``.tflite`` file in a LiteRT interpreter, fed one image per invoke.

    Outputs are found by their signature names: ``probabilities`` (else the first output) and,
    in files exported with a feature-distance gate, ``ood_score``.

    Args:
        path: the ``.tflite`` file.
        threads: interpreter threads (None: LiteRT's default).

    Attributes:
        ood: the ``ood_score`` output's details, or None when the file has none.
    """

    def __init__(self, path: str, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        by_name = {}
        signatures = self.interpreter.get_signature_list()
        if signatures:  # all_tf files have one, "serving_default"; else the first
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            by_name = self.interpreter.get_signature_runner(key).get_output_details()
        self.output = by_name.get("probabilities", self.interpreter.get_output_details()[0])
        self.ood = by_name.get("ood_score")

    def _invoke(self, q: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], q)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs float32 (N, C) for inputs (N, S, S, 3)."""
        return self.predict_with_ood(x)[0]

    def predict_with_ood(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities float32 (N, C) and ``ood_score`` float32 (N,), or None without that
        output, for inputs (N, S, S, 3)."""
        probs, ood = [], []
        for image in x:
            probs.append(dequantize_output(self._invoke(quantize_input(image[None], self.input)),
                                           self.output)[0])
            if self.ood is not None:
                ood.append(float(dequantize_output(
                    self.interpreter.get_tensor(self.ood["index"]), self.ood).reshape(-1)[0]))
        probs = np.stack(probs) if probs else np.zeros((0, self.output["shape"][-1]), np.float32)
        return probs, None if self.ood is None else np.asarray(ood, np.float32)

    def ms_per_image(self, x: np.ndarray, warmup: int = 2) -> float:
        """Mean milliseconds per invoke over the images of x (after ``warmup`` invokes)."""
        q = [quantize_input(image[None], self.input) for image in x]
        for image in q[:warmup]:
            self._invoke(image)
        start = time.perf_counter()
        for image in q:
            self._invoke(image)
        return (time.perf_counter() - start) * 1000.0 / max(len(q), 1)
