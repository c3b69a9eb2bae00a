"""Datasets: indexing the supported layouts, splitting, and the generated demo set."""
