"""Runs as folders: their names, locks, the files they hold, how a stopped run is recorded and how a run ends."""
