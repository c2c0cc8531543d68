"""The table reader: stated column types, missing values, headers, blank lines, and bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.errors import MalformedDataError
from thresher.recipe import BadRecord
from thresher.sources.table import Column, Row, Table, read_table

SEX = ("Female", "Male")
INCOME = ("<=50K", ">50K")
# The shape of UCI Adult: ", " between cells, "?" for unknown, labels with a period in the test file.
ADULT = Table((Column("age", "int"), Column("workclass", "string", optional=True), Column("sex", "category", names=SEX),
               Column("hours", "float"), Column("income", "category", names=INCOME,
                                                aliases=(("<=50K.", "<=50K"), (">50K.", ">50K")))),
              missing=("?",))


def rows(data: bytes, table: Table = ADULT) -> list[Row | BadRecord]:
    return list(read_table(data, table, label="adult.data"))


def values(data: bytes, table: Table = ADULT) -> list[dict]:
    got = rows(data, table)
    assert all(isinstance(r, Row) for r in got), got
    return [r.values for r in got]  # type: ignore[union-attr]


def test_typed_cells_with_spaces_after_commas_and_missing_markers() -> None:
    data = b"39, State-gov, Male, 40, <=50K\n50, ?, Female, 13.5, >50K\n"
    assert values(data) == [
        {"age": 39, "workclass": "State-gov", "sex": 1, "hours": 40.0, "income": 0},
        {"age": 50, "workclass": None, "sex": 0, "hours": 13.5, "income": 1},
    ]
    assert [r.line for r in rows(data)] == [1, 2]  # type: ignore[union-attr]


def test_published_test_file_junk_first_line_and_label_aliases() -> None:
    table = Table(ADULT.columns, skip_lines=1, missing=("?",))
    data = b"|1x3 Cross validator\n25, Private, Male, 40, <=50K.\n28, Local-gov, Female, 40, >50K.\n\n"
    got = rows(data, table)
    assert [r.values["income"] for r in got] == [0, 1]  # type: ignore[union-attr]
    assert [r.line for r in got] == [2, 3]  # type: ignore[union-attr]


def test_header_is_checked_and_skipped() -> None:
    table = Table((Column("x"), Column("y", "int")), header=True)
    assert values(b"x,y\n1.5,2\n", table) == [{"x": 1.5, "y": 2}]
    with pytest.raises(MalformedDataError, match=r"adult.data \(line 1\): header names the columns x, z; expected x, y"):
        rows(b"x,z\n1.5,2\n", table)


def test_trailing_blank_lines_end_the_table_but_data_after_one_is_refused() -> None:
    table = Table((Column("x"),))
    assert values(b"1\n2\n\n\n", table) == [{"x": 1.0}, {"x": 2.0}]
    with pytest.raises(MalformedDataError, match=r"\(line 3\): data after the blank line 2"):
        rows(b"1\n\n3\n", table)


@pytest.mark.parametrize(("line", "where", "problem"), [
    (b"39, State-gov, Male, 4O, <=50K", "line 2, column 4 (hours)", "'4O' is not a number"),
    (b"39, State-gov, Male, nan, <=50K", "line 2, column 4 (hours)", "'nan' is not a number"),
    (b"3_9, State-gov, Male, 40, <=50K", "line 2, column 1 (age)", "'3_9' is not a whole number"),
    (b"39.5, State-gov, Male, 40, <=50K", "line 2, column 1 (age)", "'39.5' is not a whole number"),
    (b"39, State-gov, male, 40, <=50K", "line 2, column 3 (sex)", "'male' is not one of Female, Male"),
    (b"?, State-gov, Male, 40, <=50K", "line 2, column 1 (age)", "is missing ('?'), and age has no missing values"),
    (b"39, State-gov, Male, 40", "line 2", "has 4 columns, expected 5 (age, workclass, sex, hours, income)"),
    (b"39, State-gov, Male, 40, <=50K, 7", "line 2", "has 6 columns, expected 5"),
])
def test_a_bad_row_names_file_line_and_column_and_reading_goes_on(line: bytes, where: str, problem: str) -> None:
    got = rows(b"39, State-gov, Male, 40, <=50K\n" + line + b"\n50, ?, Female, 13.5, >50K\n")
    assert isinstance(got[0], Row) and isinstance(got[2], Row) and got[2].line == 3
    bad = got[1]
    assert isinstance(bad, BadRecord)
    assert bad.source == "adult.data" and bad.where == where and bad.problem.startswith(problem)


def test_bytes_that_are_not_text_raise_naming_line_and_byte() -> None:
    with pytest.raises(MalformedDataError, match=r"adult.data \(line 2, byte 4\): is not utf-8 text \(b'\\xff'\)"):
        rows(b"39, State-gov, Male, 40, <=50K\n50, \xff, Female, 13.5, >50K\n")


def test_a_line_csv_refuses_raises_naming_the_line() -> None:
    with pytest.raises(MalformedDataError, match=r"adult.data \(line 2\): is not a ','-delimited line: .*expected"):
        rows(b'39, State-gov, Male, 40, <=50K\n50, "Pri"vate, Female, 13.5, >50K\n')


def test_reads_a_file_by_path_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "iris.data"
    path.write_bytes(b"5.1,x\n")
    (bad,) = read_table(path, Table((Column("a"), Column("b"))))
    assert isinstance(bad, BadRecord) and (bad.source, bad.where) == ("iris.data", "line 1, column 2 (b)")


def test_column_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="kind 'number'"):
        Column("x", "number")
    with pytest.raises(ValueError, match="lists its names"):
        Column("x", "category")
    with pytest.raises(ValueError, match="lists its names"):
        Column("x", "float", names=("a",))
