"""The presets under properties/preset: each builds a config without loading a model, sets only
keys that CLLM4Rec or RecBole define, and holds the values results/fidelity.md says it holds."""

import glob
import os
import re

import pytest
import yaml

from conftest import ROOT

PRESET_DIR = os.path.join(ROOT, "properties", "preset")
PRESETS = sorted(glob.glob(os.path.join(PRESET_DIR, "*.yaml")))
FIDELITY = os.path.join(ROOT, "results", "fidelity.md")
SETTING = re.compile(r"`([A-Za-z_]+): ([^`]+)`")  # a `key: value` span of fidelity.md
CELL_SPLIT = re.compile(r"(?<!\\)\|")  # table cells; `\|` is a pipe inside a cell
MAIN_COLUMNS = {"paper preset": 3, "code preset": 4, "default": 5}


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def preset(name):
    return load(os.path.join(PRESET_DIR, f"CLLM4Rec-{name}.yaml"))


def tables():
    """The markdown tables of fidelity.md as lists of rows of cells (header and rule dropped)."""
    found, rows = [], []
    with open(FIDELITY, encoding="utf-8") as f:
        for line in f:
            if line.startswith("|"):
                rows.append([c.strip() for c in CELL_SPLIT.split(line.strip())[1:-1]])
            elif rows:
                found.append(rows[2:])
                rows = []
    if rows:
        found.append(rows[2:])
    return found


def settings(rows, column):
    """``{key: value}`` of every `key: value` span in one column; a key must not disagree with itself."""
    values = {}
    for row in rows:
        for key, text in SETTING.findall(row[column]):
            value = yaml.safe_load(text)
            assert values.get(key, value) == value, f"fidelity.md gives {key} two values: {values[key]!r}, {value!r}"
            values[key] = value
    return values


def main_table():
    return next(t for t in tables() if len(t[0]) == 7)


def schedule_table():
    return next(t for t in tables() if len(t[0]) == 4)


def allowed_keys():
    """CLLM4Rec's keys and the project-wide ones (ours and RecBole's); the preset files
    themselves are left out, so a misspelt key in one cannot vouch for itself."""
    import recbole

    files = [
        os.path.join(ROOT, "properties", "model", "CLLM4Rec.yaml"),
        os.path.join(ROOT, "properties", "overall.yaml"),
        os.path.join(os.path.dirname(recbole.__file__), "properties", "overall.yaml"),
    ]
    return set().union(*(load(f) for f in files))


@pytest.mark.parametrize("path", PRESETS, ids=os.path.basename)
def test_preset_builds_a_config_without_loading_a_model(path, monkeypatch):
    from recbole_cllm4rec.model import cllm4rec
    from recbole_cllm4rec.quick_start import build_config

    def refuse(*args, **kwargs):
        raise AssertionError("building a config must not load a backbone")

    monkeypatch.setattr(cllm4rec, "load_causal_lm", refuse)
    unknown = set(load(path)) - allowed_keys()
    assert not unknown, f"{os.path.basename(path)} sets keys CLLM4Rec does not define: {sorted(unknown)}"
    config = build_config("CLLM4Rec", "ml-100k", [path])
    for key, value in load(path).items():
        assert config[key] == value, key


def test_there_are_the_three_presets():
    names = {os.path.basename(p) for p in PRESETS}
    assert {"CLLM4Rec-paper.yaml", "CLLM4Rec-code.yaml", "CLLM4Rec-paper-schedule.yaml"} <= names


@pytest.mark.parametrize("name", ["paper", "code"])
def test_fidelity_table_holds_each_preset_key_by_key(name):
    """Every key the preset sets is in its column of the table, with the preset's value, and the
    column names no key the preset leaves out."""
    table = settings(main_table(), MAIN_COLUMNS[f"{name} preset"])
    assert table == preset(name)


def test_fidelity_table_holds_the_defaults():
    from recbole_cllm4rec.quick_start import build_config

    config = build_config("CLLM4Rec", "ml-100k")
    for key, value in settings(main_table(), MAIN_COLUMNS["default"]).items():
        assert config[key] == value, f"fidelity.md's default column: {key}: {value!r}, the yaml: {config[key]!r}"


def test_code_preset_differs_from_paper_preset_exactly_where_fidelity_says():
    rows = main_table()
    paper_column, code_column = (settings(rows, MAIN_COLUMNS[c]) for c in ("paper preset", "code preset"))
    listed = {k for k in paper_column.keys() | code_column.keys() if paper_column.get(k) != code_column.get(k)}
    paper, code = preset("paper"), preset("code")
    differing = {k for k in paper.keys() | code.keys() if paper.get(k) != code.get(k)}
    assert differing == listed
    assert listed == {"reorder_items", "predict_first_main_token", "finetune_target", "mr_on_targets"}


def test_schedule_preset_is_the_paper_preset_with_the_listed_keys():
    rows = schedule_table()
    listed = settings(rows, 2)
    paper, schedule = preset("paper"), preset("paper-schedule")
    assert {k: v for k, v in schedule.items() if k in listed} == listed
    assert {k: v for k, v in schedule.items() if k not in listed} == {k: v for k, v in paper.items() if k not in listed}
    for key, value in settings(rows, 1).items():  # the paper preset's side, where the table names it
        assert paper[key] == value, key
