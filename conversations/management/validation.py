"""Argument types for management commands."""
import argparse
import re

LINE_USER_ID = re.compile(r"U[0-9a-f]{32}")


def line_user_id(value: str) -> str:
    if not LINE_USER_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a LINE user id (U followed by 32 hex digits).")
    return value
