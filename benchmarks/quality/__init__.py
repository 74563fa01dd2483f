"""The search-quality benchmark's parts: the plan of cells, the results file, the README table."""
