"""Stage 2, data: index any supported layout into one frame, split it, profile and validate it.

layouts.py       index a dataset on disk (class folders, .npy per class, manifest, image_mask) and fingerprint it
masks.py         where masks live and how one decodes
splits.py        groups (column, regex, tile) and hash-stable, group-aware train/val/test splits
prepare.py       from a DataConfig to split.csv: generate (demo), index, check, split, fingerprint
profile.py       one metadata row per file (size, channels, brightness, blur, hashes), cached by content
validation.py    the Great Expectations suite of the kind, run on the profile; the report names file and rule
synthetic.py / synthetic_pages.py   the generated shapes and handwriting pages (demo and tests)
errors.py        DatasetError; how an undecodable file is named ("empty file (0 bytes)")
"""
