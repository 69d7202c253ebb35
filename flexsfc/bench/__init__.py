"""Evaluation: the paper's Figures 4-7 reproduced on one machine, plus measurements beyond the paper.

`flexsfc bench` (flexsfc.cli.bench) runs the sections listed in flexsfc.bench.harness and writes one
JSON file and its plots per section under docs/results/.
"""
