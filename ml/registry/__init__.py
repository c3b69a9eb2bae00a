"""Stage 6, registry: artifact stores, immutable versions with movable aliases, publishing and the champion.

storage.py       open_store: the store a URI names
store.py         ArtifactStore, the interface, its key rules and errors
file_store.py / s3_store.py   file:// (flock) and s3:// (conditional writes or a listing lock, bounded waits)
versions.py      Registry: versions, aliases (production), history, rollback
publish.py       a run published as a version; production moves only on a passed gate, conditionally
champion.py      each version's training list; production and candidate scored on the validation images
                 neither trained on, with a paired bootstrap interval (champion vs challenger)
holdout.py       a version scored on a folder it never saw
records.py / report.py   RunRecords (what one retrain produced) and its Markdown report
retention.py     what goes of run folders and versions (never an aliased one), as a plan; applying a plan
"""
