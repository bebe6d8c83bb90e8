"""The run's dtype policy, and the warning where bfloat16 would be emulated on the CPU."""

from __future__ import annotations

import logging

import keras
import pytest

from all_tf.training.precision import cpu_has_bfloat16, set_precision

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.fixture
def restore_policy():
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def test_cpu_flags(tmp_path):
    (tmp_path / "avx2").write_text(AVX2)
    (tmp_path / "spr").write_text(SAPPHIRE)
    assert cpu_has_bfloat16(tmp_path / "avx2") is False
    assert cpu_has_bfloat16(tmp_path / "spr") is True
    assert cpu_has_bfloat16(tmp_path / "missing") is None


def test_mixed_precision_warns_only_where_bfloat16_is_emulated(tmp_path, caplog,
                                                               restore_policy):
    (tmp_path / "avx2").write_text(AVX2)
    (tmp_path / "spr").write_text(SAPPHIRE)
    with caplog.at_level(logging.WARNING, logger="all_tf.training.precision"):
        assert set_precision(True, tmp_path / "spr") == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert not caplog.records
        assert set_precision(False, tmp_path / "avx2") == "float32"
        assert not caplog.records
        set_precision(True, tmp_path / "avx2")
    assert "--no-mixed-precision" in caplog.text
