"""Shared fixtures: the shipped sample, the full datasets in ../shared/data, quiet TF."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Keep caches (duplicate signatures, tf.data cache files) out of the user's home directory.
if "ALL_TF_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ALL_TF_CACHE_DIR"] = tempfile.mkdtemp(prefix="all_tf-test-cache-")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "all_tf" / "sample_data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_all4() -> Path:
    """The 4-class sample shipped in the package (12 images per class)."""
    return SAMPLE_DIR / "all4"


@pytest.fixture(scope="session")
def sample_segwbc() -> Path:
    """10 white-cell images with expert masks (images/, masks/)."""
    return SAMPLE_DIR / "segwbc"


@pytest.fixture(scope="session")
def all4_dir() -> Path:
    """The full all4 dataset; tests using it are marked ``realdata``."""
    path = SHARED_DATA / "all4"
    if not path.is_dir():
        pytest.skip(f"full dataset not found at {path}")
    return path


@pytest.fixture(scope="session")
def segwbc_dir() -> Path:
    path = SHARED_DATA / "segwbc"
    if not path.is_dir():
        pytest.skip(f"full dataset not found at {path}")
    return path


@pytest.fixture(scope="session")
def gated_run(tmp_path_factory):
    """A tiny trained run with its temperature and gate fitted (``python -m all_tf.calibrate``)
    and exported (SavedModel + float32 TFLite) to ``<run>/export``."""
    pytest.importorskip("tensorflow")
    from click.testing import CliRunner
    from deploy_helpers import make_tiny_run

    from all_tf.cli.export import main as export_main
    from all_tf.experiments.calibration import calibrate_run

    run_dir, _, _ = make_tiny_run(tmp_path_factory.mktemp("gated"))
    summary = calibrate_run(run_dir)
    assert summary["temperature"] > 0 and (run_dir / "gate.json").is_file()
    result = CliRunner().invoke(export_main, [str(run_dir), "--no-verify", "--formats",
                                              "savedmodel,float32"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir
