"""The project's yaml defaults: ``overall.yaml``, ``model/``, ``dataset/``, ``preset/``, ``protocol/``.

A package only so that it ships inside the wheel and is found beside this file in a checkout and
an install alike (the top-level ``properties`` of a checkout is a link to this folder).
"""

import os

PROPERTIES_DIR = os.path.dirname(os.path.abspath(__file__))


def properties_dir():
    return PROPERTIES_DIR


def property_file(kind, name):
    """``properties/<kind>/<name>.yaml`` if this project ships one, else None."""
    path = os.path.join(PROPERTIES_DIR, kind, f"{name}.yaml")
    return path if os.path.isfile(path) else None
