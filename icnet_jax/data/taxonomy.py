"""Class names, colour palettes and label-id tables of the supported datasets.

Every dataset is stored with *train ids*: class ids in ``[0, num_classes)`` and ``IGNORE_LABEL``
(255) for pixels that are not evaluated. The tables here turn each release's own label encoding
into train ids; ``map_labels`` applies any of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

IGNORE_LABEL = 255
# Table entry of raw label values that a valid file never holds.
INVALID = -1


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the metrics need to know about a dataset.

    Attributes:
      name: dataset name, as given to ``get_data_source``.
      class_names: one name per train id, ``len == num_classes``.
      palette: uint8 ``[num_classes, 3]`` RGB colour per train id, for visualisation.
      ignore_label: label value of pixels excluded from loss and metrics.
    """

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray
    ignore_label: int = IGNORE_LABEL

    def __post_init__(self) -> None:
        palette = np.asarray(self.palette, dtype=np.uint8)
        if palette.shape != (len(self.class_names), 3):
            raise ValueError(
                f"{self.name}: palette has shape {palette.shape}, expected "
                f"({len(self.class_names)}, 3)"
            )
        palette.setflags(write=False)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "palette", palette)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def generated_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC bit-interleaved colour map: distinct colours for datasets without a palette.

    Returns:
      uint8 ``[num_classes, 3]``.
    """
    ids = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


def lookup_table(
    mapping: Mapping[int, int], size: int = 256, default: int = IGNORE_LABEL
) -> np.ndarray:
    """A dense int16 table ``[size]`` from a sparse ``{raw value: train id}`` map.

    Negative train ids in ``mapping`` mean ignore (255). Raw values absent from ``mapping`` get
    ``default``: ``IGNORE_LABEL`` where the release says so, ``INVALID`` where such a value can
    only come from a broken file.
    """
    table = np.full(size, default, dtype=np.int16)
    for raw, train_id in mapping.items():
        if 0 <= raw < size:
            table[raw] = IGNORE_LABEL if train_id < 0 else train_id
    return table


def identity_table(num_classes: int, ignore_value: int = IGNORE_LABEL) -> np.ndarray:
    """Table of labels that already hold train ids, with ``ignore_value`` marking ignored pixels."""
    return lookup_table(
        {**{i: i for i in range(num_classes)}, ignore_value: IGNORE_LABEL}, default=INVALID
    )


def map_labels(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Maps raw label values to train ids through a dense table (one helper for all datasets).

    Args:
      raw: integer label image ``[H, W]``.
      table: int16 ``[N]`` from ``lookup_table``: train id (or 255) per raw value, ``INVALID``
        for values the release never uses.

    Returns:
      uint8 ``[H, W]`` train ids.

    Raises:
      ValueError: if a raw value lies outside the table or maps to ``INVALID`` (the caller names
        the file).
    """
    raw = np.asarray(raw)
    if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"label image has non-integer dtype {raw.dtype}")
    if raw.size and (raw.min() < 0 or raw.max() >= len(table)):
        raise ValueError(
            f"raw label values span [{raw.min()}, {raw.max()}], outside the table [0, {len(table)})"
        )
    mapped = table[raw]
    if raw.size and mapped.min() < 0:
        bad = np.unique(raw[mapped < 0])[:10].tolist()
        raise ValueError(f"raw label values {bad} are not used by this dataset")
    return mapped.astype(np.uint8)


# --- Cityscapes ------------------------------------------------------------------------------

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip

CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip

# labelId -> trainId, the table of cityscapesScripts' labels.py. Unlisted ids (above 33, and 255
# where some tools write the license plate's -1) are ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255,
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8,
    22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17,
    33: 18, -1: -1,
}  # fmt: skip
CITYSCAPES_TABLE = lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID)
# trainId -> labelId, what the benchmark server and cityscapesScripts' evaluation read.
CITYSCAPES_TRAIN_TO_LABEL_ID = np.array(
    sorted((t, i) for i, t in CITYSCAPES_LABEL_TO_TRAIN_ID.items() if 0 <= t < IGNORE_LABEL),
    dtype=np.uint8,
)[:, 1]

# --- CamVid ----------------------------------------------------------------------------------

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign/symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip

# SegNet's colours for the 11 classes.
CAMVID_PALETTE = np.array(
    [
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
        (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ],
    dtype=np.uint8,
)  # fmt: skip

# SegNet label PNGs hold 0..10 and 11 = void.
CAMVID_SEGNET_TABLE = identity_table(len(CAMVID_CLASSES), ignore_value=11)

# The original 720x960 release colour-codes 32 classes (label_colors.txt). Grouped into the 11
# classes as Sturgess et al. (BMVC 2009) and SegNet did; colours of classes outside the 11
# (void, traffic cone) are ignored.
CAMVID_32_COLOURS: dict[str, tuple[int, int, int]] = {
    "Animal": (64, 128, 64), "Archway": (192, 0, 128), "Bicyclist": (0, 128, 192),
    "Bridge": (0, 128, 64), "Building": (128, 0, 0), "Car": (64, 0, 128),
    "CartLuggagePram": (64, 0, 192), "Child": (192, 128, 64), "Column_Pole": (192, 192, 128),
    "Fence": (64, 64, 128), "LaneMkgsDriv": (128, 0, 192), "LaneMkgsNonDriv": (192, 0, 64),
    "Misc_Text": (128, 128, 64), "MotorcycleScooter": (192, 0, 192),
    "OtherMoving": (128, 64, 64), "ParkingBlock": (64, 192, 128), "Pedestrian": (64, 64, 0),
    "Road": (128, 64, 128), "RoadShoulder": (128, 128, 192), "Sidewalk": (0, 0, 192),
    "SignSymbol": (192, 128, 128), "Sky": (128, 128, 128), "SUVPickupTruck": (64, 128, 192),
    "TrafficCone": (0, 0, 64), "TrafficLight": (0, 64, 64), "Train": (192, 64, 128),
    "Tree": (128, 128, 0), "Truck_Bus": (192, 128, 192), "Tunnel": (64, 0, 64),
    "VegetationMisc": (192, 192, 0), "Void": (0, 0, 0), "Wall": (64, 192, 0),
}  # fmt: skip

CAMVID_32_TO_11: dict[str, str] = {
    "Sky": "sky",
    "Building": "building", "Archway": "building", "Bridge": "building", "Tunnel": "building",
    "Wall": "building",
    "Column_Pole": "pole",
    "Road": "road", "LaneMkgsDriv": "road", "LaneMkgsNonDriv": "road",
    "Sidewalk": "sidewalk", "ParkingBlock": "sidewalk", "RoadShoulder": "sidewalk",
    "Tree": "tree", "VegetationMisc": "tree",
    "SignSymbol": "sign/symbol", "Misc_Text": "sign/symbol", "TrafficLight": "sign/symbol",
    "Fence": "fence",
    "Car": "car", "SUVPickupTruck": "car", "Truck_Bus": "car", "Train": "car",
    "OtherMoving": "car",
    "Pedestrian": "pedestrian", "Child": "pedestrian", "CartLuggagePram": "pedestrian",
    "Animal": "pedestrian",
    "Bicyclist": "bicyclist", "MotorcycleScooter": "bicyclist",
}  # fmt: skip


def rgb_key(rgb: np.ndarray) -> np.ndarray:
    """Packs RGB uint8 ``[..., 3]`` into int32 ``[...]`` (``R << 16 | G << 8 | B``)."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _camvid_colour_table() -> tuple[np.ndarray, np.ndarray]:
    keys, ids = [], []
    for name, colour in CAMVID_32_COLOURS.items():
        keys.append(rgb_key(np.array(colour)))
        group = CAMVID_32_TO_11.get(name)
        ids.append(CAMVID_CLASSES.index(group) if group else IGNORE_LABEL)
    order = np.argsort(keys)
    return np.asarray(keys, np.int32)[order], np.asarray(ids, np.uint8)[order]


# Sorted packed colours of the 32 classes and their train ids, for ``colour_labels_to_ids``.
CAMVID_COLOUR_KEYS, CAMVID_COLOUR_IDS = _camvid_colour_table()


def colour_labels_to_ids(
    rgb: np.ndarray, keys: np.ndarray = CAMVID_COLOUR_KEYS, ids: np.ndarray = CAMVID_COLOUR_IDS
) -> np.ndarray:
    """Maps a colour-coded label image to train ids.

    Args:
      rgb: uint8 ``[H, W, 3]`` RGB label image.
      keys: sorted int32 ``[K]`` packed colours (``rgb_key``).
      ids: uint8 ``[K]`` train id of each colour.

    Returns:
      uint8 ``[H, W]``.

    Raises:
      ValueError: if a colour is not in ``keys`` (caller names the file).
    """
    packed = rgb_key(rgb)
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    unknown = keys[pos] != packed
    if unknown.any():
        bad = np.unique(packed[unknown])[:5]
        colours = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in bad.tolist()]
        raise ValueError(f"{int(unknown.sum())} pixels have colours outside the table: {colours}")
    return ids[pos]


# --- COCO-Stuff ------------------------------------------------------------------------------

# Ids 0..181 as in the 164K release's label PNGs (COCO category id - 1): 91 thing classes
# (11 of them never annotated) then 91 stuff classes.
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window",
    "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
COCO_STUFF_PALETTE = generated_palette(len(COCO_STUFF_CLASSES))

# 164K PNGs already hold train ids (255 unlabeled); the 10K .mat files hold id + 1 (0 unlabeled).
COCO_STUFF_164K_TABLE = identity_table(len(COCO_STUFF_CLASSES))
COCO_STUFF_10K_TABLE = lookup_table(
    {0: IGNORE_LABEL, **{i + 1: i for i in range(len(COCO_STUFF_CLASSES))}},
    size=len(COCO_STUFF_CLASSES) + 1,
    default=INVALID,
)

# --- Synthetic street scenes -----------------------------------------------------------------

STREET_CLASSES = (
    "road", "sidewalk", "building", "sky", "vegetation", "pole", "sign", "person", "bicycle",
)  # fmt: skip
# Cityscapes' colours for the same classes.
STREET_PALETTE = CITYSCAPES_PALETTE[[0, 1, 2, 10, 8, 5, 7, 11, 18]]


# --- DatasetInfo of the built-in datasets ----------------------------------------------------

CITYSCAPES = DatasetInfo("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
CAMVID = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE)
COCO_STUFF = DatasetInfo("coco_stuff", COCO_STUFF_CLASSES, COCO_STUFF_PALETTE)
STREET = DatasetInfo("street", STREET_CLASSES, STREET_PALETTE)
# The built-in datasets by `config.dataset.name`: classes, names and palettes without preparing
# the data (inference, the weights converter).
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (CITYSCAPES, CAMVID, COCO_STUFF, STREET)}


def custom_info(
    name: str, class_names: Sequence[str], palette: np.ndarray | None = None
) -> DatasetInfo:
    """DatasetInfo of a user dataset; without a palette, colours come from ``generated_palette``."""
    if palette is None:
        palette = generated_palette(len(class_names))
    return DatasetInfo(name, tuple(class_names), palette)
