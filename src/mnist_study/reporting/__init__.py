"""Sweeps read back from their run folders (sweep): the study's report, statistics, figures and CSVs, the
learning-rate choice (tuning) and two sweeps side by side (compare). Imports no torch: report.py starts fast."""
