"""Stage 3, training: from a prepared split to best.pt / last.pt, on CPU, one GPU or several (DDP).

step.py          train_step: the kind's trainer (TRAINERS), GPU placement
run_dirs.py      the run folder keyed by split and training config: resume across processes, published = done
classifier.py    classifier training: cached resized splits, datasets, train_classifier
segmenter.py     segmenter training on crops, validated on whole pages (pages.py)
loop.py          fit: the epoch loop, its typed state (LoopState), checkpoints and resume
budget.py        learning-rate schedules and the time budget they follow
samplers.py      balanced class weights and the class-balanced sampler
datasets.py / augment.py   in-memory torch datasets and albumentations pipelines
models.py / small_nets.py   the model factory (timm, U-Net) and small-image networks
losses.py / mixup.py / checkpoint.py   losses, MixUp, crash-safe checkpoints
distributed.py / ranks.py / gpus.py   DDP processes, rank helpers, which GPUs a training takes
"""
