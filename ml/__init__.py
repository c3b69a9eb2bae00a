"""visionflow ML code: plain numpy/pandas/PIL/torch, no Prefect."""
