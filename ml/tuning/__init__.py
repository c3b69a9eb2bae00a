"""The recipe search behind flows.tune: Optuna (TPE, a median pruner) over the config keys of tune.params.

study.py    where the study lives (a journal in the store, or an RDB URL), opened to continue it, saved back
trial.py    one trial: its overrides drawn, trained with its validation metric reported each epoch, pruned or told;
            the study's trials as rows and its best as a YAML snippet for the preset
"""
