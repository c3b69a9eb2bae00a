"""Stage 7, monitoring: production scores images, logs them, and is checked against its reference.

production.py    the production version (downloaded once) and its settings resolved once (ProductionSettings)
scoring.py       image sources (folders, S3), streaming onnxruntime classifier scoring
rows.py          what is logged per image, per kind (ROWS): classifier columns or pixel uncertainty
log.py           the prediction log, the window check and its report, alerts, the retrain marker
reference.py     the drift reference published with a version (REFERENCES)
drift.py         Evidently drift tests and live metrics from labels
alerts.py        alerts as webhook messages and Prefect event payloads
uncertainty.py   how unsure a model is about an image (least confidence, margin, entropy, unsure pixels)
retention.py     a model's whole retention plan: run folders, versions, log days, reports, the download cache
"""
