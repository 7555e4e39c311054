from papersim.data.validation import RowRules, describe, duplicate_id_rows, merge_failures, row_failures

RULES = RowRules(min_abstract_chars=10, max_abstract_chars=40, require_title=True)


def test_each_rule_flags_exactly_the_rows_that_break_it():
    failures = row_failures(
        paper_id=["a", None, "c", "d", "e", "f"],
        title=["ok", "ok", "", "ok", "bad \ufffd byte", "ok"],
        abstract=["a fine abstract", "a fine abstract", "a fine abstract", "short", "a fine abstract", "x" * 41],
        rules=RULES,
    )
    assert failures == {
        1: ["id_not_null"],
        2: ["title_not_empty"],
        3: ["abstract_length"],
        4: ["utf8_valid"],
        5: ["abstract_length"],
    }


def test_an_empty_abstract_is_reported_once_as_empty():
    assert row_failures(["a"], ["t"], [""], RULES) == {0: ["abstract_not_empty"]}


def test_untitled_rows_pass_when_titles_are_not_required():
    rules = RowRules(10, 40, require_title=False)
    assert row_failures(["a"], [""], ["a fine abstract"], rules) == {}


def test_duplicate_ids_flag_every_row_of_the_duplicate_set():
    assert duplicate_id_rows(["a", "b", "a", "c", "b"]) == [0, 1, 2, 4]
    assert duplicate_id_rows(["a", "b"]) == []


def test_rule_descriptions_carry_the_configured_bounds():
    assert describe("abstract_length", RULES) == "abstract length within [10, 40] characters"


def test_metadata_rules_join_the_row_rules_once_each():
    failures = row_failures(["a", "b", "c"], ["ok", "ok", "ok"], ["a fine abstract", "short", "a fine abstract"], RULES)
    invalid = {1: {"date_valid": "date 'soon' is not a date"},
               2: {"date_valid": "date 'soon' is not a date", "url_valid": "url 'x' is not an http(s) URL"}}
    assert merge_failures(failures, invalid) == {1: ["abstract_length", "date_valid"], 2: ["date_valid", "url_valid"]}
    assert merge_failures({0: ["date_valid"]}, {0: {"date_valid": "..."}}) == {0: ["date_valid"]}
    assert describe("date_valid") == "date and updated are dates (YYYY-MM-DD, YYYY-MM or YYYY)"
