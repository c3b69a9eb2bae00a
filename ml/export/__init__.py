"""Stage 5, export: the file that ships (ONNX, parity-checked, optionally int8), and any ONNX file scored.

step.py          export_step, onnx_metrics_step, latency_step (EXPORTERS), shipped_evaluation
onnx.py          export with a dynamic batch, parity against torch, onnxruntime sessions, IncompatibleModel
classifier.py / segmenter.py   each kind's export; segmenter.py also scores and times a segmenter ONNX
onnx_eval.py     a classifier ONNX on a split: probabilities, metrics, latency
quantize.py      int8 (dynamic or static) judged against fp32
"""
