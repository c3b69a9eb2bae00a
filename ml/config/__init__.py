"""Stage 1, configuration: one pydantic RunConfig per run, from a preset YAML plus dotted overrides.

run.py           RunConfig, load_config, parse_override, apply_overrides, the presets folder
data.py          data: layout, classes, splits (val/test fractions, groups), generated data, expectations
training.py      model and train (optimiser, schedule, budget, losses, sampler, augment)
evaluation.py    eval, gate and gate.champion, and the metric names each task kind produces
publishing.py    export (ONNX, TTA, int8) and storage (store URI, endpoint, timeouts)
production.py    monitor, labeling and alerts: operating a published model
retention.py     retention: how long run folders, versions, logs and reports are kept (flows.gc)
tune.py          tune: the recipe search (flows.tune): the searched keys and ranges, the study's storage, seed, pruner
section.py       Section, the base that forbids unknown keys
"""
