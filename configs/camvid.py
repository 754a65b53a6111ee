"""ICNet on CamVid (SegNet layout, 360x480, 11 classes): 10K steps as in the paper.

`--config=configs/camvid.py:cpu` is the from-scratch recipe for a small machine measured in
docs/camvid.md (its ablation table chose the options); `:cpu+compress_full` and
`:cpu+compress_half` run the compression recipe (README, "Pretrained starts") at that scale.
"""

from icnet_jax import default

# Batch 8 of 225x321 crops (40% of a frame's pixels, 32k+1 sides: the release geometry; the
# 2-core CPU's budget), the short schedule's lr of 0.02, ENet class weights and OHEM (min_kept:
# about a fifth of a crop, as mmsegmentation's 100K of 512x1024).
CPU = {
    "batch_size": 8,
    "num_steps": 1500,
    "optim.lr": 0.02,
    "input.scale_range": (0.75, 1.5),
    "input.crop_size": (225, 321),
    "loss.class_weights": "enet",
    "loss.ohem": True,
    "loss.ohem_min_kept": 15_000,
}


def get_config(variant: str | None = None):
    config = default.get_config()
    config.dataset.name = "camvid"
    config.num_steps = 10_000
    # 32k+1 sizes keep the release geometry; 361 rows would not (1/8 maps of 45 and 46 rows).
    config.input.crop_size = (353, 481)  # the 360x480 frame less 7 rows
    config.dataset.builder_kwargs.config = "segnet"  # or "original" (720x960, 32 colours)
    config.dataset.builder_kwargs.on_bad_file = "error"  # or "skip" (counted, logged)
    return default.apply_variant(config, variant, {"cpu": CPU})
