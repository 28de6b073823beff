"""How log lines look on the terminal (conf/train.yaml, hydra.job_logging): the message alone, so that the per-epoch
line fits 80 columns, and warnings and errors with their level in front. train.log keeps Hydra's format, with the
time, the logger's name and the level of every line."""

from __future__ import annotations

import logging


class TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname}: {message}"
