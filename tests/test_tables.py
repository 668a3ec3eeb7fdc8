"""Spec for minidp/tables.py: every measured table in README.md and tutorials/ is generated from its results file.

Independent references: the committed markdown itself (regenerating a table must give back exactly the text
that is there), a results file edited in a temporary copy (the check must notice), and hand-written studies
whose tables are written out here.

Run: python -m pytest -q tests/test_tables.py
"""

import json
import re

import pytest

from minidp import tables

STUDIES = sorted(p.stem for p in tables.RESULTS.glob("*.json"))
# tables that define things rather than report measurements (schedules, files, the sweeps' status)
DEFINITIONS = ("| name | betas | used by |", "| file | what |", "| sweep | the paper's | varies | y | status |",
               "| figure | what was measured at this scale |")


@pytest.mark.parametrize("path", tables.MARKDOWN, ids=lambda p: p.name)
def test_every_table_in_the_markdown_is_what_its_results_file_generates(path):
    text = path.read_text()
    regenerated, _ = tables.regenerate(text)
    assert regenerated == text, f"{path.name}: a table differs from its results file (python -m minidp.tables)"


@pytest.mark.parametrize("path", tables.MARKDOWN, ids=lambda p: p.name)
def test_no_measured_table_is_typed_by_hand(path):
    # outside the markers, a table holding a decimal number is a hand-typed measurement
    outside = tables.BLOCK.sub("", path.read_text())
    for block in re.findall(r"(?:^\|.*\n)+", outside, re.M):
        if block.startswith(DEFINITIONS):
            continue
        assert not re.search(r"\d\.\d", block), f"{path.name}: hand-typed table\n{block}"


def test_every_results_file_backs_a_table_and_records_how_each_run_was_made():
    used = set()
    for path in tables.MARKDOWN:
        used |= set(tables.regenerate(path.read_text())[1])
    assert used == set(STUDIES)
    for name in STUDIES:
        study = tables.load(name)
        assert study["study"] == name and study["runs"]
        for run in study["runs"]:
            assert {"name", "overrides", "seed", "metrics", "command", "commit"} <= set(run), (name, run["name"])


def test_the_check_notices_a_number_changed_in_the_results_file(tmp_path):
    study = tables.load("sweep_beta_schedule")
    study["runs"][0]["metrics"]["absrel"]["value"] += 0.01
    (tmp_path / "sweep_beta_schedule.json").write_text(json.dumps(study))
    text = next(p for p in tables.MARKDOWN if p.name == "09_scaling_laws.md").read_text()
    block = tables.BLOCK.search(text[text.index("<!-- table:sweep_beta_schedule -->"):]).group(0)
    new, names = tables.regenerate(block, results=tmp_path)
    assert names == ["sweep_beta_schedule"] and new != block
    assert f"{study['runs'][0]['metrics']['absrel']['value']:.4f}" in new


def hand_study(ci):
    return {"study": "s", "evidence": "8 scenes, one seed",
            "columns": [{"head": "run", "cell": "label"}, {"head": "AbsRel", "metric": "absrel", "digits": 3}],
            "runs": [{"cells": {"label": "a"}, "metrics": {"absrel": {"value": 0.1234, "ci": ci}}},
                     {"cells": {"label": "b"}, "metrics": {"absrel": {"value": 0.2, "ci": ci, "digits": 2}}}]}


def test_a_study_with_intervals_prints_them_and_no_caveat():
    assert tables.render(hand_study([0.1, 0.15])) == (
        "| run | AbsRel |\n|---|---|\n| a | 0.123 [0.100, 0.150] |\n| b | 0.20 [0.10, 0.15] |\n")


def test_a_study_without_intervals_says_so_in_one_line():
    lines = tables.render(hand_study(None)).splitlines()
    assert lines[:4] == ["| run | AbsRel |", "|---|---|", "| a | 0.123 |", "| b | 0.20 |"]
    assert lines[4] == "" and lines[5].startswith("*No intervals:") and "(8 scenes, one seed)" in lines[5]
    assert len(lines) == 6


def test_a_transposed_study_has_one_column_per_run():
    study = hand_study([0.1, 0.15])
    study["transpose"] = True
    assert tables.render(study) == ("| run | a | b |\n|---|---|---|\n"
                                    "| AbsRel | 0.123 [0.100, 0.150] | 0.20 [0.10, 0.15] |\n")


def test_a_study_caveat_is_the_tables_last_line_in_italics():
    study = hand_study([0.1, 0.15])
    study["caveat"] = "Seeds differ only in initial weights."
    lines = tables.render(study).splitlines()
    assert lines[-2:] == ["", "*Seeds differ only in initial weights.*"] and len(lines) == 6
