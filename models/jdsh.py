"""JDSH networks as the DUCH authors ran them: the same ImgNetRS / TxtNetRS networks as DJSRH (models/djsrh.py)."""

from __future__ import annotations

from models.djsrh import DJSRH


class JDSH(DJSRH):
    method = "jdsh"
