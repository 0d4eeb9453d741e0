"""Logging to the console and to a file in the run folder."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "duch"
FILE_ONLY = {"file_only": True}  # ``logger.info(msg, extra=FILE_ONLY)``: in the log file, not on the console


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


class PrintableFormatter(logging.Formatter):
    """Console lines as printable text only (``utils.terminal``): data in a message cannot send escape
    sequences to the terminal; the line breaks of the program's own tables stay."""

    def format(self, record: logging.LogRecord) -> str:
        from utils.terminal import printable

        return printable(super().format(record), keep="\n")


def setup_logger(log_file: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(PrintableFormatter("%(message)s"))
    console.addFilter(_not_file_only)  # per-epoch lines would break the console's progress bar
    logger.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    return logger


def close_log_files(logger: logging.Logger | None = None) -> None:
    """Detach and close the file handlers (before a run folder is removed)."""
    logger = logger or get_logger()
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
