"""The Java-properties parser shared by server.properties and agent.properties."""

import pytest

from stackwright import properties


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db.url = mysql\\://h/db\n", {"db.url": "mysql://h/db"}),
        ("a=b\\=c\\:d\n", {"a": "b=c:d"}),
        ("key value with  spaces\n", {"key": "value with  spaces"}),
        ("key:value\n", {"key": "value"}),
        ("  indented = x  \n", {"indented": "x  "}),
        ("k\\ ey=v\n", {"k ey": "v"}),
        ("tab=\\t|\\u00e9|\\n\n", {"tab": "\t|\u00e9|\n"}),
        ("lone\n", {"lone": ""}),
        ("# comment=1\n! other=2\n   # indented comment\n", {}),
        ("a=1\na=2\n", {"a": "2"}),
        ("path=C:\\\\tmp\n", {"path": "C:\\tmp"}),
        ("bad=\\uZZ\n", {"bad": "\\uZZ"}),
    ],
)
def test_entries_read_like_java(text, expected):
    assert properties.parse(text) == expected


def test_continuation_lines_join_without_their_leading_blanks():
    text = "db.url = mysql+pymysql\\://cloud@db/cloud?\\\n    charset=utf8mb4\\\n\t&ssl=1\nnext=2\n"
    assert properties.parse(text) == {"db.url": "mysql+pymysql://cloud@db/cloud?charset=utf8mb4&ssl=1", "next": "2"}


def test_an_even_number_of_backslashes_ends_the_line():
    assert properties.parse("a=x\\\\\nb=y\n") == {"a": "x\\", "b": "y"}


def test_a_backslash_on_the_last_line_continues_into_nothing():
    assert properties.parse("a=x\\") == {"a": "x"}


def test_entry_line_round_trips_every_character():
    key, value = "odd key=:#!", " lead\\ \t\n\r\f\u00e9 = : end"
    assert properties.parse(properties.entry_line(key, value) + "\n") == {key: value}


def test_file_edits_replace_a_continued_entry_and_keep_comments(tmp_path):
    path = tmp_path / "server.properties"
    path.write_text("# engine\ndb.url=sqlite\\\n  :///x.db\napi.listen=127.0.0.1:8080\n")
    props = properties.PropertiesFile.read(path)
    assert props.as_dict() == {"db.url": "sqlite:///x.db", "api.listen": "127.0.0.1:8080"}
    assert not props.set("db.url", "sqlite:///x.db")
    assert props.set("db.url", "mysql://h/db")
    assert props.render() == "# engine\ndb.url=mysql://h/db\napi.listen=127.0.0.1:8080\n"


def test_read_of_a_missing_file_is_empty(tmp_path):
    assert properties.read(tmp_path / "absent.properties") == {}
    assert properties.PropertiesFile.read(tmp_path / "absent.properties").render() == ""
