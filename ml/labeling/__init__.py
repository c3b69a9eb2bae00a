"""Stage 8, labeling: pick the pool images worth labeling and hand them to Label Studio.

batch.py         a labeling batch: score the pool, skip known images, pick K, write tasks.json + selection.csv
scored_pool.py   pool images scored per kind (POOL_SCORERS), the chosen files read again and named for Label Studio
selection.py     Shortlist: the K images chosen while the pool streams (uncertainty, diversity, balanced, random)
labelstudio.py   Label Studio's import format and labeling config
"""
