"""The language-model contribution suite's driver (benchmarks/llm_contribution.py): which cells it
runs with which flags, and how the report turns cell tables into verdicts. No model is trained."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import llm_contribution as suite  # noqa: E402

HEAD = "| model | test ndcg@10 | test recall@10 | valid ndcg@10 | train s | peak RSS MB |\n|---|---|---|---|---|---|\n"


def test_cllm4rec_cells_carry_the_suite_schedule_and_baselines_do_not():
    _, models, argv = suite.cell("sparse", "CLLM4Rec random weights", 2021)
    assert models == "CLLM4Rec" and "--llm_weights=random" in argv and "--seed=2021" in argv
    assert all(flag in argv for flag in suite.CLLM4REC_SCHEDULE)
    path, models, argv = suite.cell("cold-item", "baselines", 2020)
    assert path.endswith(os.path.join("cold-item", "baselines-seed2020.md")) and "Random" in models
    assert not any(flag in argv for flag in suite.CLLM4REC_SCHEDULE)


def test_no_text_cells_take_the_defaults_text_away_on_every_protocol():
    for protocol in suite.PROTOCOLS:
        no_text = suite.cell(protocol, "CLLM4Rec no text", 2020)[2]
        assert "--cold_item_rows=trained" in no_text  # the default's item rows read their text
        assert not any("cold_item_rows" in flag for flag in suite.cell(protocol, "CLLM4Rec", 2020)[2])
    assert "--cold_user_states=trained" in suite.cell("cold-user", "CLLM4Rec no text", 2020)[2]


def _write(root, protocol, group, seed, rows):
    folder = os.path.join(root, suite.CELLS_DIR, protocol)
    os.makedirs(folder, exist_ok=True)
    body = "".join(f"| {m} | {n} | {n / 2} | {v} | 10 | 100 |\n" for m, (n, v) in rows.items())
    with open(os.path.join(folder, f"{suite.slug(group)}-seed{seed}.md"), "w", encoding="utf-8") as f:
        f.write("# cell\n\n" + HEAD + body)


def test_report_judges_paired_differences_against_the_seed_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "ROOT", str(tmp_path))
    for seed, (pre, rnd, pop) in zip(suite.SEEDS, [(0.25, 0.07, 0.03), (0.24, 0.08, 0.03), (0.26, 0.06, 0.04)]):
        _write(tmp_path, "cold-item", "CLLM4Rec", seed, {"CLLM4Rec": (pre, 0.30)})
        _write(tmp_path, "cold-item", "CLLM4Rec random weights", seed, {"CLLM4Rec": (rnd, 0.30)})
        _write(tmp_path, "cold-item", "baselines", seed, {"Pop": (pop, 0.1)})
    for seed, (pre, rnd) in zip(suite.SEEDS, [(0.100, 0.101), (0.102, 0.100), (0.099, 0.100)]):
        _write(tmp_path, "sparse", "CLLM4Rec", seed, {"CLLM4Rec": (pre, 0.1)})
        _write(tmp_path, "sparse", "CLLM4Rec random weights", seed, {"CLLM4Rec": (rnd, 0.1)})
        _write(tmp_path, "sparse", "CLLM4Rec no text", seed, {"CLLM4Rec": (rnd - 0.05, 0.1)})
    _write(tmp_path, "default", "baselines", 2020, {"EASE": (0.33, 0.25)})  # no CLLM4Rec cell yet
    out = tmp_path / "report.md"
    suite.report(type("Args", (), {"output": str(out), "plot": None})())
    text = out.read_text(encoding="utf-8")
    lines = {
        line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
        for line in text.splitlines()
        if line.count("|") > 6
    }
    assert "pretrained ahead" in lines["cold-item/vs random weights"]
    assert "0.1800 ±" in lines["cold-item/vs random weights"]
    assert "no difference" in lines["sparse/vs random weights"]
    assert "pretrained ahead" in lines["sparse/vs no text"]
    assert any(
        line.startswith("| cold-item | CLLM4Rec | Pop |") and "at or above" in line for line in text.splitlines()
    )
    assert text.count("| CLLM4Rec no text |") == 1  # sparse's; cold-item ran none
    assert "cold-item/vs no text" not in lines
    assert not any(key.startswith("default/vs") for key in lines)


@pytest.mark.parametrize("bad", ["nonsense", "sparse,nope"])
def test_unknown_protocol_or_group_is_refused_before_anything_runs(bad, monkeypatch):
    calls = []
    monkeypatch.setattr(suite.subprocess, "run", lambda *a, **k: calls.append(a))
    args = type(
        "Args", (), {"groups": "CLLM4Rec", "protocols": bad, "seeds": "2020", "force": False, "dry_run": False}
    )()
    with pytest.raises(SystemExit, match="unknown"):
        suite.run(args)
    assert not calls


def test_cold_user_cells_read_their_test_metrics_from_the_cold_users_table(tmp_path):
    """The cold-user main table mixes in the warm users' test split; the suite reads test metrics
    from the cell's "cold users only" table, and the rest (valid, time, memory) from the main one."""
    path = tmp_path / "cell.md"
    path.write_text(
        "# cell\n\n" + HEAD + "| CLLM4Rec | 0.3 | 0.2 | 0.25 | 10 | 100 |\n\n"
        "Test, the cold users only:\n\n| model | recall@10 | ndcg@10 |\n|---|---|---|\n| CLLM4Rec | 0.11 | 0.6 |\n",
        encoding="utf-8",
    )
    (values,) = suite.read_table(str(path), suite.TEST_TABLE["cold-user"]).values()
    assert values == {"ndcg": 0.6, "recall": 0.11, "valid": 0.25, "secs": 10.0, "rss": 100.0}
    assert suite.read_table(str(path))["CLLM4Rec"]["ndcg"] == 0.3
    assert "--cold_user_states=trained" in suite.cell("cold-user", "CLLM4Rec no text", 2020)[2]
