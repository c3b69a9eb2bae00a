"""Stage 4, evaluation: the best checkpoint scored on the validation (and test) split, and the gate's pure rules.

step.py          evaluate_step: the kind's evaluator (EVALUATORS)
classifier.py    metrics at eval.decision, per-source accuracy, plots, TTA beside; as_shipped
segmenter.py     whole-page metrics (mean and per page), overlays
record.py        Evaluation, what either kind's evaluation returns
gate.py          evaluate_gate: rules from measured numbers and config, one row each
tta.py / plots.py / stats.py   flip TTA, PNG plots, confidence intervals of repeated runs
"""
