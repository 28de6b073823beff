"""Runs as folders: their names, locks, the files they hold, how a stopped run is recorded, how a run ends and how
its log lines look on the terminal."""
