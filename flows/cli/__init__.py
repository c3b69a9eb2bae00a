"""What the flows' command lines and parameter forms share; no flow lives here.

args.py          argparse helpers: --preset/--set/--store, existing paths, summaries, exit codes from states
production.py    the production flows' options (score, monitor, select_for_labeling), --set checked before work
params.py        flow parameter types: the Prefect UI form (presets as a choice, patterns, descriptions)
runs.py          flow decorators (run names, crash alerts), failed states that carry a verdict, shard runners
registry.py      the registry's command line (python -m flows.registry: list, promote, rollback)
"""
