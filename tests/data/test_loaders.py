"""Every loader reads its format, and bad input names file, line and field."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from directrec.data import loaders
from directrec.data.schema import DataError


def test_csv_with_catalogue(ratings_csv, items_csv):
    raw = loaders.load("csv", ratings_csv, items_csv, columns="rating=rating")
    assert len(raw.interactions) == 9
    assert raw.interactions["timestamp"].tolist()[:2] == [100, 200]
    assert raw.interactions["rating"].tolist()[0] == 5.0
    assert raw.items.set_index("item_id").loc["a", "categories"] == ["x", "y"]


def test_csv_column_mapping_and_iso_dates(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,iid,when,kind\n1,10,2024-01-02T00:00:00Z,click\n2,11,2024-01-03,view\n")
    raw = loaders.load("csv", p, columns="user=uid,item=iid,time=when,event=kind")
    assert raw.interactions["timestamp"].tolist() == [1704153600, 1704240000]
    assert raw.interactions["event"].tolist() == ["click", "view"]


def test_parquet(tmp_path):
    p = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": ["x", "y"], "timestamp": [5, 6]}).to_parquet(p)
    raw = loaders.load("parquet", p)
    assert raw.interactions["user_id"].tolist() == ["1", "2"]


def test_non_integer_timestamp_names_line_and_field(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user_id,item_id,timestamp\nu1,a,100\nu1,b,yesterday-ish\n")
    with pytest.raises(DataError) as e:
        loaders.load("csv", p)
    assert e.value.line == 3 and e.value.field == "timestamp"
    assert str(p) in str(e.value) and "yesterday-ish" in str(e.value)


def test_missing_value_and_missing_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user_id,item_id,timestamp\nu1,,100\n")
    with pytest.raises(DataError, match=r"bad.csv:2: field 'item_id': missing value"):
        loaders.load("csv", p)
    q = tmp_path / "cols.csv"
    q.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match=r"column 'user_id' \(mapped as user\) not found"):
        loaders.load("csv", q)


def test_empty_and_wrong_encoding(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        loaders.load("csv", empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user_id,item_id\nu1,a\nu2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        loaders.load("csv", latin)
    assert e.value.line == 3 and "utf-8" in str(e.value)


def test_malformed_row_is_reported(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2,extra,fields\n")
    with pytest.raises(DataError, match="malformed row"):
        loaders.load("csv", p)


def test_movielens_100k_and_1m_files(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    genres = "|".join(["0"] * 19)
    (tmp_path / "u.item").write_bytes(
        f"10|Caf\xe9 Movie (1995)|01-Jan-1995||http://x|{genres[:-1]}1\n".encode("latin-1")
    )
    raw = loaders.load("movielens", tmp_path)
    assert len(raw.interactions) == 2 and raw.items["title"][0] == "Café Movie (1995)"
    assert raw.items["categories"][0] == ["Western"]
    d = tmp_path / "m1"
    d.mkdir()
    (d / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (d / "movies.dat").write_bytes(
        "1193::One Flew (1975)::Drama\n661::James (1996)::Animation|Musical\n".encode("latin-1")
    )
    raw = loaders.load("movielens", d / "ratings.dat", d / "movies.dat")
    assert raw.interactions["item_id"].tolist() == ["1193", "661"]
    assert raw.items["categories"].tolist()[1] == ["Animation", "Musical"]


def test_bundled_ml100k_reads():
    inter, items = loaders.bundled_ml100k()
    raw = loaders.load("recbole", inter, items)
    assert len(raw.interactions) == 100_000 and len(raw.items) == 1682
    assert raw.items["title"][0] == "Toy Story"


def test_recbole_header_checked(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("uid:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match="user_id"):
        loaders.load("recbole", p)


def test_sequence_format(tmp_path):
    p = tmp_path / "seq.txt"
    p.write_text("1 5 6 7\n2 6 8\n\n3 9\n")
    raw = loaders.load("sequence", p)
    assert raw.interactions["item_id"].tolist() == ["5", "6", "7", "6", "8", "9"]
    assert raw.interactions["line"].tolist() == [1, 1, 1, 2, 2, 4]
    bad = tmp_path / "bad.txt"
    bad.write_text("1 5\n2\n")
    with pytest.raises(DataError, match=r"bad.txt:2"):
        loaders.load("sequence", bad)


def test_amazon_reviews_and_python_literal_metadata(tmp_path):
    reviews = tmp_path / "reviews.json.gz"
    lines = [
        {"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1400000000},
        {"reviewerID": "A1", "asin": "B2", "overall": 3.0, "unixReviewTime": 1400000100},
    ]
    reviews.write_bytes(gzip.compress("\n".join(json.dumps(x) for x in lines).encode()))
    meta = tmp_path / "meta.json"
    meta.write_text(
        "{'asin': 'B1', 'title': 'Lipstick', 'categories': [['Beauty', 'Makeup']], 'brand': 'X'}\n"
        '{"asin": "B2", "title": "Soap", "category": ["Beauty", "Bath"]}\n'
    )
    raw = loaders.load("amazon", reviews, meta)
    assert raw.interactions["timestamp"].tolist() == [1400000000, 1400000100]
    assert raw.items["categories"].tolist() == [["Beauty", "Makeup"], ["Beauty", "Bath"]]
    bad = tmp_path / "bad.json"
    bad.write_text('{"reviewerID": "A", "asin": "B", "unixReviewTime": "soon"}\n')
    with pytest.raises(DataError) as e:
        loaders.load("amazon", bad)
    assert e.value.line == 1 and e.value.field == "unixReviewTime"


def test_literal_eval_never_runs_code(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text("__import__('os').system('echo pwned')\n")
    reviews = tmp_path / "r.json"
    reviews.write_text(json.dumps({"reviewerID": "A", "asin": "B", "unixReviewTime": 1}) + "\n")
    with pytest.raises(DataError, match="not a JSON object"):
        loaders.load("amazon", reviews, meta)


def test_unknown_format():
    with pytest.raises(DataError, match="unknown format"):
        loaders.load("xml", "x")


def test_explicit_item_mapping_wins_over_a_movielens_file_name(tmp_path):
    """A catalogue called movies.csv in someone else's layout: with --item-columns it is
    read by the mapping, and a missing mapped column is a DataError naming file and field."""
    inter = tmp_path / "log.csv"
    inter.write_text("uid,iid,ts\nu1,m1,1\nu1,m2,2\n")
    movies = tmp_path / "movies.csv"
    movies.write_text("Id,Name,Tags\nm1,Alpha,x|y\nm2,Beta,z\n")
    raw = loaders.load(
        "csv", inter, movies, "user=uid,item=iid,time=ts", "id=Id,title=Name,categories=Tags"
    )
    assert raw.items["title"].tolist() == ["Alpha", "Beta"]
    assert raw.items["categories"].tolist() == [["x", "y"], ["z"]]
    with pytest.raises(DataError, match=r"movies\.csv:1: field 'Nope'"):
        loaders.load("csv", inter, movies, "user=uid,item=iid,time=ts", "id=Nope,title=Name")
    # Without a mapping the name still means MovieLens, and its missing columns are named too.
    with pytest.raises(DataError, match=r"movies\.csv:1: field '(movieId|title)'"):
        loaders.load("csv", inter, movies, "user=uid,item=iid,time=ts")


def test_cli_never_ends_in_a_traceback(tmp_path):
    """Bad input: exit 2 and one line; --debug is accepted by every command."""
    from typer.testing import CliRunner

    from directrec.cli import app

    inter = tmp_path / "log.csv"
    inter.write_text("uid,iid,ts\nu1,m1,1\n")
    movies = tmp_path / "movies.csv"
    movies.write_text("Id,Name\nm1,Alpha\n")
    args = [
        "ingest",
        "--format",
        "csv",
        "--interactions",
        str(inter),
        "--columns",
        "user=uid,item=iid,time=ts",
        "--items",
        str(movies),
        "--db",
        str(tmp_path / "s.duckdb"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "movies.csv:1: field 'title'" in res.output
    res = CliRunner().invoke(app, ["--debug", "info", "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "Traceback" not in res.output


# --------------------------------------------------------------------------- nothing dropped
def test_every_mapped_column_must_exist(tmp_path):
    """A mapped column the file lacks is refused, naming the file, the column and the
    columns the file has, for the events and the catalogue alike; a misspelt key too."""
    log = tmp_path / "log.csv"
    log.write_text("uid,sku,ts,stars\nu1,a,1,5\nu2,b,2,3\n")
    for mapping, missing in (
        ("user=uid,item=sku,time=when", "when"),
        ("user=uid,item=sku,time=ts,rating=score", "score"),
        ("user=uid,item=sku,time=ts,event=kind", "kind"),
    ):
        with pytest.raises(DataError) as e:
            loaders.load("csv", log, columns=mapping)
        assert e.value.field == missing and str(log) in str(e.value)
        assert "['uid', 'sku', 'ts', 'stars']" in str(e.value)
    with pytest.raises(DataError, match="unknown key 'tme'"):
        loaders.load("csv", log, columns="user=uid,item=sku,tme=ts")
    cat = tmp_path / "cat.csv"
    cat.write_text("sku,name\na,Alpha\nb,Beta\n")
    cols = "user=uid,item=sku,time=ts"
    for mapping, missing in (
        ("id=sku,title=name,text=description", "description"),
        ("id=sku,title=name,categories=tags", "tags"),
        ("id=sku,title=title", "title"),
    ):
        with pytest.raises(DataError) as e:
            loaders.load("csv", log, cat, cols, mapping)
        assert e.value.field == missing and str(cat) in str(e.value)
        assert "['sku', 'name']" in str(e.value)
    # An unmapped default that is absent is no error, but it is said.
    raw = loaders.load("csv", log, cat, "user=uid,item=sku", "id=sku,title=name")
    assert raw.interactions["timestamp"].isna().all() and raw.time_unit is None
    assert any("'timestamp'" in n for n in raw.notes)
    assert any("'text', 'categories'" in n for n in raw.notes)


def test_options_a_format_does_not_read_are_refused(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n")
    with pytest.raises(DataError, match="--columns does not apply to --format movielens"):
        loaders.load("movielens", tmp_path, columns="user=uid")
    seq = tmp_path / "seq.txt"
    seq.write_text("1 5 6\n")
    with pytest.raises(DataError, match="--time-unit does not apply"):
        loaders.load("sequence", seq, time_unit="s")
    with pytest.raises(DataError, match="--time-unit must be one of s, ms, us, ns"):
        loaders.load("csv", seq, time_unit="sec")


@pytest.mark.parametrize(
    ("cells", "unit", "detected"),
    [
        (["881250949", "881250950"], "s", True),
        (["881250949000", "881250950000"], "ms", True),
        (["881250949000000", "881250950000000"], "us", True),
        (["881250949000000000", "881250950000000000"], "ns", True),
        (["881250949.5", "881250950.25"], "s", True),
        (["881250949000.5", "881250950000"], "ms", False),
    ],
)
def test_time_units_read_from_magnitude_or_given(tmp_path, cells, unit, detected):
    p = tmp_path / "log.csv"
    p.write_text(
        "user_id,item_id,timestamp\n" + "".join(f"u,{i},{c}\n" for i, c in enumerate(cells))
    )
    raw = loaders.load("csv", p, time_unit=None if detected else unit)
    assert raw.interactions["timestamp"].tolist() == [881250949, 881250950]
    assert (raw.time_unit, raw.time_unit_detected) == (unit, detected)
    assert raw.subsecond == sum("." in c for c in cells)


def test_implausible_times_name_file_line_and_field(tmp_path):
    p = tmp_path / "log.csv"
    # Seconds, with one value in milliseconds on line 4: not read as the year 55000.
    p.write_text("user_id,item_id,ts\nu,a,1700000000\nu,b,1700000001\nu,c,1700000002000\n")
    with pytest.raises(DataError) as e:
        loaders.load("csv", p, columns="time=ts")
    assert (e.value.line, e.value.field) == (4, "ts") and "after 2100" in str(e.value)
    assert "--time-unit" in str(e.value) and str(p) in str(e.value)
    p.write_text("user_id,item_id,ts\nu,a,1700000000\nu,b,-5\n")
    with pytest.raises(DataError, match="before 1970") as e:
        loaders.load("csv", p, columns="time=ts")
    assert (e.value.line, e.value.field) == (3, "ts")
    # A unit the user names is checked the same way.
    p.write_text("user_id,item_id,ts\nu,a,1700000000000\n")
    with pytest.raises(DataError, match=r"in seconds \(--time-unit s\)"):
        loaders.load("csv", p, columns="time=ts", time_unit="s")
    assert loaders.load("csv", p, columns="time=ts").interactions["timestamp"][0] == 1700000000
    # ISO dates obey the same range: a 1969 date is not stored as a negative time.
    p.write_text("user_id,item_id,ts\nu,a,2023-11-14T22:13:20Z\nu,b,1969-07-20T20:17:00Z\n")
    with pytest.raises(DataError, match="between 1970 and 2100") as e:
        loaders.load("csv", p, columns="time=ts")
    assert (e.value.line, e.value.field) == (3, "ts")


def test_delimiter_option_and_the_hint_when_a_header_is_one_column(tmp_path):
    for sep, hint, option in ((";", "--delimiter ';'", ";"), ("\t", "--delimiter tab", "tab")):
        p = tmp_path / "log.csv"
        p.write_text(sep.join(["user_id", "item_id", "timestamp"]) + "\n" + sep.join("ua1") + "\n")
        with pytest.raises(DataError) as e:
            loaders.load("csv", p)
        assert hint in str(e.value) and str(p) in str(e.value) and e.value.line == 1
        raw = loaders.load("csv", p, delimiter=option)
        assert raw.interactions[["user_id", "item_id"]].values.tolist() == [["u", "a"]]
    cat = tmp_path / "cat.csv"
    cat.write_text("item_id|title\na|Alpha\n")
    with pytest.raises(DataError, match=r"looks pipe-delimited: pass --delimiter '\|'"):
        loaders.load("csv", tmp_path / "log.csv", cat, delimiter="tab")


def test_words_pandas_reads_as_times_are_refused(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id,ts\nu,a,2023-11-14\nu,b,now\n")
    with pytest.raises(DataError, match="ISO-8601") as e:
        loaders.load("csv", p, columns="time=ts")
    assert (e.value.line, e.value.field) == (3, "ts")


def test_line_numbers_survive_quoted_newlines_and_blank_lines(tmp_path):
    """A quoted field spanning two lines and a blank line: the error still names the
    line the bad row is on."""
    p = tmp_path / "log.csv"
    p.write_text('user_id,item_id,ts,note\nu,a,1700000000,"two\nlines"\n\nu,b,oops,x\n')
    with pytest.raises(DataError) as e:
        loaders.load("csv", p, columns="time=ts")
    assert (e.value.line, e.value.field) == (5, "ts")


def test_parquet_nulls_are_missing_values_and_integral_floats_integers(tmp_path):
    p = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1.0, 2.0, None], "item_id": ["a", "b", "c"]}).to_parquet(p)
    with pytest.raises(DataError, match="missing") as e:
        loaders.load("parquet", p)
    assert (e.value.line, e.value.field) == (3, "user_id")
    pd.DataFrame({"user_id": [1.0, 2.0], "item_id": ["a", "b"]}).to_parquet(p)
    assert loaders.load("parquet", p).interactions["user_id"].tolist() == ["1", "2"]
