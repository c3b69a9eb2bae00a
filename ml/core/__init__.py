"""Stage-free building blocks every stage may import (and that import no stage).

files.py         sha256 of bytes and files, atomic writes, PROJECT_ROOT
kinds.py         the task kinds (model.task) and KindRegistry: one implementation per kind for a stage
metrics.py       classification metrics from probabilities, and predicting a torch loader
seg_metrics.py   binary segmentation metrics per image (F1, IoU, edge IoU) and post-processing
thresholds.py    decision thresholds for binary models (chosen on validation, stored with the version)
tiling.py        whole images of any size through a fixed-size network, by overlapping tiles
torchvision_shim.py   `import timm` on the CPU-only torch wheel (config checks model names, training builds them)
"""
