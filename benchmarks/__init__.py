"""On-demand benchmarks: each prints a table and writes JSON under benchmarks/results/ (README "Benchmarks")."""
