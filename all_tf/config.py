"""One dataclass of every setting, with the paper's defaults, saved with each run.

Example:
    >>> from all_tf.config import Config
    >>> cfg = Config.preset("quick")
    >>> cfg.preprocess.image_size
    64
    >>> Config.from_dict(cfg.to_dict()) == cfg
    True
    >>> cfg.override({"model.name": "mobilenetv3small", "train.loss": "ce"}).train.loss
    'ce'
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

ColourSpace = Literal["rgb", "hsv", "lab", "hed"]
InputMode = Literal["image", "crops"]
SplitKind = Literal["70:30", "60:40", "kfold", "block", "contiguous"]
CbamPlacement = Literal["stages", "every_block", "final", "none"]
SegmentationMethod = Literal["otsu", "multiotsu", "fixed", "rgb"]
MergeBridge = Literal["colour", "closing"]
Strategy = Literal["default", "mirrored", "multi_worker"]
LossSchedule = Literal["ce", "focal", "ce_then_focal"]
Preset = Literal["quick", "paper", "scratch"]

COLOUR_SPACES = get_args(ColourSpace)
INPUT_MODES = get_args(InputMode)
SPLIT_KINDS = get_args(SplitKind)
CBAM_PLACEMENTS = get_args(CbamPlacement)
SEGMENTATION_METHODS = get_args(SegmentationMethod)
MERGE_BRIDGES = get_args(MergeBridge)
STRATEGIES = get_args(Strategy)
LOSSES = get_args(LossSchedule)
PRESETS = get_args(Preset)

UNCERTAINTY_THRESHOLD = 0.7
"""Default confidence below which a prediction is "uncertain" (the preprint's 0.7)."""

# Literal alias name (as the annotation string) -> allowed values, for validation.
_CHOICES = {name: get_args(alias) for name, alias in {
    "ColourSpace": ColourSpace, "InputMode": InputMode, "SplitKind": SplitKind,
    "CbamPlacement": CbamPlacement, "SegmentationMethod": SegmentationMethod,
    "MergeBridge": MergeBridge, "Strategy": Strategy, "LossSchedule": LossSchedule}.items()}


def check_choices(section) -> None:
    """Raise ValueError if a ``Literal``-typed field of a config dataclass has another value."""
    for f in dataclasses.fields(section):
        choices = _CHOICES.get(f.type)
        value = getattr(section, f.name)
        if choices is not None and value not in choices:
            raise ValueError(f"{type(section).__name__}.{f.name} must be one of "
                             f"{', '.join(choices)}; got {value!r}")


@dataclass
class PreprocessConfig:
    """How an RGB uint8 image becomes the model's float input.

    The model input is float32 (image_size, image_size, 3) with values in [0, 1] for every
    colour space (see ``all_tf.preprocessing.colour_spaces``).
    """

    image_size: int = 224
    colour_space: ColourSpace = "rgb"
    clahe: bool = True
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    reinhard: bool = True
    # Reinhard target in OpenCV 8-bit LAB units: {"mean": [L, a, b], "std": [L, a, b]}.
    # None means "fit from the training set" at train time; stored fitted in the run config.
    reinhard_target: dict | None = None
    # Fill the bottom-right scale-bar label box with the median colour (after resizing) so the
    # model cannot learn the label; see all_tf.preprocessing.label_corner. In crop mode the
    # field is masked before segmentation, so no crop shows the label.
    mask_label_corner: bool = False
    input_mode: InputMode = "image"  # "image": whole field; "crops": nucleus crops, averaged per image
    crop_margin: int = 8  # pixels added around each nucleus box
    max_crops: int = 8  # at most this many crops per image (largest nuclei first)

    def __post_init__(self):
        check_choices(self)
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {self.image_size}")
        if self.clahe and (self.clahe_clip_limit <= 0 or self.clahe_tile_grid < 1):
            raise ValueError("CLAHE needs clahe_clip_limit > 0 and clahe_tile_grid >= 1, got "
                             f"{self.clahe_clip_limit} and {self.clahe_tile_grid}")
        if self.max_crops < 1 or self.crop_margin < 0:
            raise ValueError("crops need max_crops >= 1 and crop_margin >= 0 px, got "
                             f"{self.max_crops} and {self.crop_margin}")


@dataclass
class AugmentConfig:
    """Training-only augmentation (Keras preprocessing layers)."""

    flips: bool = True
    rot90: bool = True
    colour_jitter: float = 0.05  # max brightness/contrast change as a fraction; 0 disables
    hed_jitter: float = 0.0  # stain jitter in HED space (Tellez et al. 2019); 0 disables
    zoom: float = 0.0  # max scale change as a fraction (cell size varies by batch); 0 disables
    rand_augment: bool = False

    def __post_init__(self):
        if not 0 <= self.hed_jitter <= 1:
            raise ValueError(f"hed_jitter must be in [0, 1], got {self.hed_jitter}")
        if not 0 <= self.zoom < 1:
            raise ValueError(f"zoom must be in [0, 1), got {self.zoom}")


@dataclass
class SegmentationConfig:
    """Nucleus segmentation by the purple index PI = (R+B)/2 - G on [0,1] RGB.

    The defaults are the best measured on segwbc (docs/benchmarks.md, "Nucleus segmentation"):
    three-class Otsu, and fragments (lobes) of one nucleus joined into one object. The
    ``paper`` preset sets the preprint's two-class Otsu without merging.
    """

    method: SegmentationMethod = "multiotsu"  # see all_tf.segmentation
    threshold: float = 0.2  # fixed PI threshold (paper: 0.1-0.3)
    opening_radius: int = 3
    min_object_px: int = 80
    smooth_sigma: float = 1.0
    # join nucleus fragments closer than about twice this fraction of the largest nucleus's
    # equivalent radius (a closing); 0 disables (all_tf.segmentation.merge_lobes)
    merge_lobes: float = 0.5
    # "colour": only through pixels of the raw colour threshold (touching cells stay apart);
    # "closing": the closing fills every such gap
    merge_bridge: MergeBridge = "colour"

    def __post_init__(self):
        check_choices(self)
        if not self.merge_lobes >= 0:
            raise ValueError(f"merge_lobes must be >= 0, got {self.merge_lobes}")


@dataclass
class ModelConfig:
    name: str = "efficientnetv2s_cbam"  # one of all_tf.models.MODEL_NAMES
    cbam_placement: CbamPlacement = "stages"
    cbam_reduction: int = 16
    dropout: float = 0.3
    weights: str | None = None  # None | "imagenet" | path to a weights file
    bn_momentum: float = 0.9  # from-scratch training needs faster BN statistics than 0.99/0.999

    def __post_init__(self):
        check_choices(self)


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 3e-4
    min_learning_rate: float = 1e-6
    warmup_epochs: int = 2  # linear learning-rate warm-up
    weight_decay: float = 1e-5
    # "ce": cross-entropy throughout; "focal": focal loss throughout; "ce_then_focal":
    # cross-entropy for loss_warmup_epochs, then focal loss (the preprint's schedule)
    loss: LossSchedule = "ce_then_focal"
    loss_warmup_epochs: int = 5  # with loss "ce_then_focal"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    class_weights: bool = False
    early_stopping_patience: int = 15
    mixed_precision: bool = False  # "mixed_bfloat16" policy when True
    deterministic: bool = False
    strategy: Strategy = "default"

    def __post_init__(self):
        check_choices(self)
        if self.loss_warmup_epochs < 0:
            raise ValueError(f"loss_warmup_epochs must be >= 0, got {self.loss_warmup_epochs}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1, got "
                             f"{self.epochs} and {self.batch_size}")

    @property
    def focal_start_epoch(self) -> int:
        """0-based epoch at which focal loss replaces cross-entropy (``epochs``: never)."""
        return {"ce": self.epochs, "focal": 0,
                "ce_then_focal": min(self.loss_warmup_epochs, self.epochs)}[self.loss]

    @property
    def loss_switch_epoch(self) -> int | None:
        """0-based epoch from which validation losses are not comparable with earlier ones
        (focal loss replaces cross-entropy within the run), or None."""
        switch = self.focal_start_epoch
        return switch if 0 < switch < self.epochs else None


@dataclass
class SplitConfig:
    kind: SplitKind = "70:30"
    seed: int = 42
    val_fraction: float = 0.15  # of the training part
    fold: int = 0  # test fold for kind "kfold" and "contiguous" (0..n_folds-1)
    n_folds: int = 5
    block_size: int = 36  # consecutive file numbers per block, kind == "block" (about one slide)
    # kind "contiguous": training and validation images at most this many file numbers from
    # a test (or, for training, validation) image of the same class are dropped
    embargo: int = 37

    def __post_init__(self):
        check_choices(self)
        if self.embargo < 0:
            raise ValueError(f"embargo must be >= 0 file numbers, got {self.embargo}")

    @property
    def test_fraction(self) -> float:
        return {"70:30": 0.3, "60:40": 0.4}.get(self.kind, 0.3)


@dataclass
class Config:
    data_dir: str = ""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    uncertainty_threshold: float = UNCERTAINTY_THRESHOLD
    # softmax temperature fitted on held-out images (all_tf.evaluation.calibration); 1 = none
    temperature: float = 1.0
    # inference: average the softmax over the 8 flips and 90-degree rotations of each field
    tta: bool = False

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.tta and self.preprocess.input_mode != "image":
            raise ValueError("tta averages views of a whole field (input_mode 'image')")
        if self.augment.hed_jitter > 0 and self.preprocess.colour_space != "rgb":
            raise ValueError("augment.hed_jitter works on RGB input (colour_space 'rgb'), "
                             f"not {self.preprocess.colour_space!r}")

    @classmethod
    def preset(cls, name: str) -> Config:
        """A named starting point (one of :data:`PRESETS`).

        ``paper``: the preprint's settings (224 px, 100 epochs, lr 3e-4, focal loss after 5
        cross-entropy epochs, two-class Otsu nucleus segmentation without lobe merging).
        ``scratch``: the recipe measured to train EfficientNetV2-S +
        CBAM from random initialisation (batch 32, 60 epochs, peak lr 1e-3, cross-entropy
        throughout, bf16; 98.6-99.1 % at 224 px on a GPU, 97.98 ± 0.38 % over 3 seeds at
        ``image_size=128`` on 2 CPU cores, docs/results.md). ``quick``: tiny (64 px, 1 epoch), a
        smoke test on the shipped sample, for the demo and tests. ``scratch`` and ``quick``
        keep the measured-best segmentation defaults (:class:`SegmentationConfig`).
        """
        cfg = cls()
        if name == "paper":
            cfg.segmentation.method = "otsu"
            cfg.segmentation.merge_lobes = 0.0
            return cfg
        if name == "scratch":
            cfg.train.batch_size = 32
            cfg.train.epochs = 60
            cfg.train.learning_rate = 1e-3
            cfg.train.loss = "ce"
            cfg.train.loss_warmup_epochs = 60
            cfg.train.mixed_precision = True
            return cfg
        if name == "quick":
            cfg.preprocess.image_size = 64
            cfg.model.name = "efficientnetv2b0_cbam"
            cfg.train.epochs = 1
            cfg.train.batch_size = 8
            cfg.train.learning_rate = 1e-3
            cfg.train.warmup_epochs = 1
            cfg.train.loss_warmup_epochs = 2
            cfg.train.early_stopping_patience = 100
            return cfg
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        sections = {
            "preprocess": PreprocessConfig,
            "augment": AugmentConfig,
            "segmentation": SegmentationConfig,
            "model": ModelConfig,
            "train": TrainConfig,
            "split": SplitConfig,
        }
        kwargs = {}
        d = _upgrade(d)
        for key, value in d.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value)
            elif key in {f.name for f in dataclasses.fields(cls)}:
                kwargs[key] = value
            else:
                raise ValueError(f"unknown config key {key!r}")
        return cls(**kwargs)

    def override(self, updates: Mapping[str, Any]) -> Config:
        """A validated copy with dotted-key updates, e.g. ``{"model.name": "vgg16"}``.

        ``None`` values are skipped (an option not given on the command line).

        Raises:
            ValueError: an unknown key, or a value the section refuses.
        """
        d = self.to_dict()
        for key, value in updates.items():
            if value is None:
                continue
            section, _, name = key.rpartition(".")
            target = d.get(section) if section else d
            if not isinstance(target, dict) or name not in target or (
                    not section and isinstance(target[name], dict)):
                raise ValueError(f"unknown config key {key!r}")
            target[name] = value
        return Config.from_dict(d)

    def save(self, path: str | Path) -> None:
        from all_tf.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a valid all_tf config ({e})") from e


def _build(klass, value: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"unknown {klass.__name__} keys: {sorted(unknown)}")
    return klass(**value)


# the segmentation keys every config saved before lobe merging existed holds
_SEGMENTATION_BEFORE_MERGE = {"method", "threshold", "opening_radius", "min_object_px",
                              "smooth_sigma"}


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """Configs saved before ``train.loss`` existed: infer it from the warm-up length.
    Configs saved before ``segmentation.merge_lobes`` existed (a full segmentation section
    without it): ``merge_lobes`` 0, as they were segmented (a released model's gate keeps
    the nucleus counts it was fitted on)."""
    seg = d.get("segmentation")
    if isinstance(seg, dict) and "merge_lobes" not in seg \
            and _SEGMENTATION_BEFORE_MERGE <= set(seg):
        d = {**d, "segmentation": {**seg, "merge_lobes": 0.0}}
    train = d.get("train")
    if isinstance(train, dict) and "loss" not in train:
        warmup = train.get("loss_warmup_epochs", TrainConfig.loss_warmup_epochs)
        epochs = train.get("epochs", TrainConfig.epochs)
        loss = "ce" if warmup >= epochs else "focal" if warmup == 0 else "ce_then_focal"
        d = {**d, "train": {**train, "loss": loss}}
    return d
