"""visionflow's ML code: plain numpy/pandas/PIL/torch, no Prefect, one package per pipeline stage.

The stages, in the order data flows; a stage imports only earlier stages and `core` (tests/test_layout.py):

    core/        stage-free building blocks: content hashes and atomic writes, the task-kind registry,
                 classification and segmentation metrics, decision thresholds, tiled prediction
    config/      the one pydantic RunConfig per run, a module per stage's section, presets + overrides
    data/        index a layout, split (hash-stable, group-aware), profile, validate (GX), generate demo data
    training/    datasets and augmentation, the networks, the loop, its budget and samplers, DDP, checkpoints;
                 classifier.py / segmenter.py train each kind, step.py picks (TRAINERS)
    evaluation/  the best checkpoint scored (classifier.py / segmenter.py, step.py: EVALUATORS), TTA, plots,
                 the gate's pure rules
    export/      ONNX export and parity, int8, any ONNX scored on a split (step.py: EXPORTERS), the shipped file
    registry/    artifact stores (file://, s3://), versions and aliases, publishing, the champion, holdouts,
                 the run report, retention of run folders and versions (a plan, then apply)
    tuning/      the recipe search: Optuna trials over tune.params, pruned by validation epochs, the study in the store
    monitoring/  streaming scoring, the prediction log, the drift reference, Evidently drift, alerts,
                 the production version and its resolved settings, a model's whole retention plan
    labeling/    a scored pool, the K images to label, Label Studio's format

Each package's docstring says which module holds what.
"""

STAGES = ("core", "config", "data", "training", "evaluation", "export", "registry", "tuning", "monitoring", "labeling")
