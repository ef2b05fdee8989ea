"""The bridge's TOML config: the shipped example, errors that say where and what to do, the
stage map, folders of bridges, and where the ledger lives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.config import (
    BridgeConfig,
    ConfigError,
    StageMap,
    load_config,
    load_configs,
    parse_config,
    status_key,
)
from sheet_bridge.meta.events import classify_event_name

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bridge.toml"

BASE: dict[str, Any] = {
    "sheets": {
        "spreadsheet_id": "sheet-1",
        "credentials": "anonymous",
        "api_endpoint": "http://127.0.0.1:8085",
    },
    "meta": {"pixel_id": "123456789"},
    "columns": {"status": "Lead Status"},
    "stages": [
        {"status": ["New", "New Lead"], "event": "Lead", "value": 100},
        {"status": "MQL", "event": "QualifiedLead", "custom": True},
        {"status": "SQL", "event": "Schedule"},
        {"status": "On hold", "event": "Contact", "send": False},
        {"status": "Disqualified", "event": "Disqualified", "custom": True, "negative": True},
    ],
}


def config_data(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for section, value in changes.items():
        data[section] = value
    return data


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


TOML = """
[sheets]
spreadsheet_id = "{sheet}"
tab = "{tab}"
credentials = "anonymous"
api_endpoint = "http://127.0.0.1:8085"

[meta]
pixel_id = "{pixel}"
{meta_extra}

[columns]
status = "Lead Status"

[[stages]]
status = "New"
event = "Lead"
"""


def toml(sheet: str = "s1", tab: str = "Leads", pixel: str = "111", meta_extra: str = "") -> str:
    return TOML.format(sheet=sheet, tab=tab, pixel=pixel, meta_extra=meta_extra)


# ---- the shipped example ------------------------------------------------------------------


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.stage_map.positive[0].event == "Lead"


def test_example_config_event_names_are_standard_or_deliberately_custom() -> None:
    config = load_config(EXAMPLE)
    for stage in config.stages:
        check = classify_event_name(stage.event, stage.custom)
        assert check.verdict != "refused", check.message
    mql = config.stage_map.lookup("MQL")
    assert mql is not None and mql.event == "QualifiedLead" and mql.custom


def test_example_config_says_why_qualified_lead_is_custom() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "QualifiedLead is NOT one of Meta's 17 standard events" in text


# ---- errors name the file, the key and the fix ---------------------------------------------


def test_unknown_key_under_meta_names_file_key_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "bridge.toml", toml(meta_extra='pixelid = "1"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "meta.pixelid" in message
    assert "remove it or check its spelling" in message


def test_missing_pixel_id_names_the_key_and_says_add_it() -> None:
    data = config_data(meta={})
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="/etc/bridges/a.toml")
    message = str(err.value)
    assert message.startswith("/etc/bridges/a.toml: ")
    assert "meta.pixel_id" in message
    assert "add it" in message


@pytest.mark.parametrize("pixel", ["my pixel", "١٢٣٤٥", "12²"])  # isdigit() says yes to both
def test_pixel_id_that_is_not_a_number_says_where_to_copy_it_from(pixel: str) -> None:
    with pytest.raises(ConfigError, match="Events Manager"):
        parse_config(config_data(meta={"pixel_id": pixel}))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (config_data(meta={"pixel_id": "1", "currency": "RUPEES"}), "meta.currency"),
        (
            config_data(stages=[{"status": "New", "event": "Lead", "currency": "XX"}]),
            "[[stages]] #1.currency",
        ),
    ],
)
def test_bad_currency_names_the_key_and_gives_an_iso_example(
    data: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="b.toml")
    message = str(err.value)
    assert "b.toml" in message
    assert key in message
    assert "3-letter ISO 4217 code" in message


def test_currency_is_upper_cased() -> None:
    config = parse_config(config_data(meta={"pixel_id": "1", "currency": "inr"}))
    assert config.meta.currency == "INR"


def test_status_in_two_stages_is_refused_naming_both_stages() -> None:
    stages = [*BASE["stages"], {"status": [" new "], "event": "Purchase"}]
    with pytest.raises(ConfigError) as err:
        parse_config(config_data(stages=stages), source="b.toml")
    message = str(err.value)
    assert "b.toml" in message
    assert "stage 1 and stage 6" in message
    assert "only one stage" in message


def test_two_stages_sending_the_same_event_are_refused() -> None:
    stages = [*BASE["stages"], {"status": "Won", "event": "Lead"}]
    with pytest.raises(ConfigError) as err:
        parse_config(config_data(stages=stages), source="b.toml")
    message = str(err.value)
    assert "'Lead'" in message
    assert "stage 1 and stage 6" in message
    assert "own event name" in message


@pytest.mark.parametrize(
    "endpoint",
    [
        None,
        "https://sheets.googleapis.com",
        "http://10.0.0.5:8085",
        "http://127.0.0.1.evil.example:8085",  # a DNS name, not the loopback address
    ],
)
def test_anonymous_credentials_with_a_non_loopback_endpoint_are_refused(
    endpoint: str | None,
) -> None:
    sheets = {"spreadsheet_id": "s", "credentials": "anonymous", "api_endpoint": endpoint}
    with pytest.raises(ConfigError) as err:
        parse_config(config_data(sheets=sheets), source="b.toml")
    assert "key sheets" in str(err.value)
    assert "http://127.0.0.1:PORT" in str(err.value)


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8085", "http://localhost:9", "http://[::1]:8085"]
)
def test_anonymous_credentials_with_a_loopback_endpoint_are_accepted(endpoint: str) -> None:
    sheets = {"spreadsheet_id": "s", "credentials": "anonymous", "api_endpoint": endpoint}
    assert parse_config(config_data(sheets=sheets)).sheets.api_endpoint == endpoint


def test_service_account_without_key_file_says_which_key_to_add() -> None:
    sheets = {"spreadsheet_id": "s", "credentials": "service_account"}
    with pytest.raises(ConfigError, match="service_account_file"):
        parse_config(config_data(sheets=sheets))


def test_unknown_column_field_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config_data(columns={"status": "S", "emial": "Email"}))
    assert "emial" in str(err.value)
    assert "email" in str(err.value)


def test_missing_status_column_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"columns\.status is required"):
        parse_config(config_data(columns={"email": "Email"}))


def test_unknown_action_source_is_refused_listing_metas() -> None:
    with pytest.raises(ConfigError, match="system_generated"):
        parse_config(config_data(meta={"pixel_id": "1", "action_source": "crm"}))


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[sheets\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_file_says_to_copy_the_example(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"examples/bridge\.toml"):
        load_config(tmp_path / "nope.toml")


# ---- stages -------------------------------------------------------------------------------


def test_stage_status_may_be_a_single_string_or_a_list() -> None:
    config = parse_config(config_data())
    assert config.stages[0].status == ("New", "New Lead")
    assert config.stages[1].status == ("MQL",)


def test_stage_without_any_status_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one status value"):
        parse_config(config_data(stages=[{"status": [" ", ""], "event": "Lead"}]))


def test_only_negative_stages_are_refused() -> None:
    stages = [{"status": "Junk", "event": "Junk", "custom": True, "negative": True}]
    with pytest.raises(ConfigError, match="at least one stage must be positive"):
        parse_config(config_data(stages=stages))


@pytest.mark.parametrize(
    ("cell", "key"),
    [("New", "new"), ("  NEW  ", "new"), ("New   Lead", "new lead"), ("\tSQL\n", "sql")],
)
def test_status_key_trims_folds_spaces_and_case(cell: str, key: str) -> None:
    assert status_key(cell) == key


def test_status_key_case_folds_beyond_lowercase() -> None:
    assert status_key("STRASSE") == status_key("straße")


def test_stage_map_lookup_matches_any_listed_status_trimmed_and_case_folded() -> None:
    stages = parse_config(config_data()).stage_map
    new = stages.lookup(" new  lead ")
    assert new is not None and new.event == "Lead" and new.index == 0
    assert stages.lookup("NEW") is new
    mql = stages.lookup("mql")
    assert mql is not None and mql.event == "QualifiedLead"
    assert stages.lookup("Won") is None
    assert stages.lookup("") is None


def test_stage_map_rank_is_funnel_position_among_positive_stages() -> None:
    stages = parse_config(config_data()).stage_map
    assert isinstance(stages, StageMap)
    ranks = {s.event: stages.rank(s) for s in stages.stages}
    assert ranks == {"Lead": 0, "QualifiedLead": 1, "Schedule": 2, "Contact": 3, "Disqualified": -1}


def test_stage_map_positive_excludes_negative_stages_in_file_order() -> None:
    stages = parse_config(config_data()).stage_map
    assert [s.event for s in stages.positive] == ["Lead", "QualifiedLead", "Schedule", "Contact"]
    disqualified = stages.lookup("Disqualified")
    assert disqualified is not None and disqualified.negative
    on_hold = stages.lookup("on hold")
    assert on_hold is not None and not on_hold.send


def test_stage_map_lists_configured_statuses_in_file_order() -> None:
    stages = parse_config(config_data()).stage_map
    assert stages.configured_statuses() == [
        "New",
        "New Lead",
        "MQL",
        "SQL",
        "On hold",
        "Disqualified",
    ]


# ---- folders of bridges -------------------------------------------------------------------


def test_load_configs_reads_every_toml_in_a_folder(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", toml(sheet="s1", pixel="111"))
    write(tmp_path / "b.toml", toml(sheet="s2", pixel="222"))
    write(tmp_path / "notes.txt", "not a config")
    configs = load_configs(tmp_path)
    assert [(c.sheets.spreadsheet_id, c.meta.pixel_id) for c in configs] == [
        ("s1", "111"),
        ("s2", "222"),
    ]
    assert [Path(c.source).name for c in configs] == ["a.toml", "b.toml"]


def test_two_tabs_of_one_spreadsheet_are_two_bridges(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", toml(sheet="s1", tab="Brand A"))
    write(tmp_path / "b.toml", toml(sheet="s1", tab="Brand B"))
    assert len(load_configs(tmp_path)) == 2


def test_two_files_claiming_the_same_tab_are_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", toml(sheet="s1", pixel="111"))
    write(tmp_path / "b.toml", toml(sheet="s1", pixel="222"))
    with pytest.raises(ConfigError) as err:
        load_configs(tmp_path)
    message = str(err.value)
    assert "a.toml" in message and "b.toml" in message
    assert "s1" in message and "'Leads'" in message


def test_load_configs_of_a_single_file(tmp_path: Path) -> None:
    path = write(tmp_path / "one.toml", toml())
    assert [c.source for c in load_configs(path)] == [str(path)]


def test_load_configs_of_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \*\.toml"):
        load_configs(tmp_path)


# ---- ledger path --------------------------------------------------------------------------


def _with_ledger(tmp_path: Path, ledger: str | None) -> BridgeConfig:
    extra = "" if ledger is None else f'\n[server]\nledger = "{ledger}"\n'
    return load_config(write(tmp_path / "bridge.toml", toml() + extra))


def test_ledger_env_variable_wins_over_everything(tmp_path: Path) -> None:
    config = _with_ledger(tmp_path, "file.db")
    environ = {"SHEET_BRIDGE_LEDGER": "/var/lib/env.db", "XDG_DATA_HOME": "/xdg"}
    assert Path(config.ledger_location(environ)) == Path("/var/lib/env.db")


def test_ledger_from_the_file_is_relative_to_the_file(tmp_path: Path) -> None:
    config = _with_ledger(tmp_path, "data/ledger.db")
    assert (
        Path(config.ledger_location({"XDG_DATA_HOME": "/xdg"})) == tmp_path / "data" / "ledger.db"
    )


def test_absolute_ledger_from_the_file_is_kept(tmp_path: Path) -> None:
    config = _with_ledger(tmp_path, "/srv/ledger.db")
    assert Path(config.ledger_location({})) == Path("/srv/ledger.db")


def test_ledger_defaults_to_xdg_data_home(tmp_path: Path) -> None:
    config = _with_ledger(tmp_path, None)
    expected = Path("/xdg/sheet-bridge/ledger.db")
    assert Path(config.ledger_location({"XDG_DATA_HOME": "/xdg"})) == expected


def test_empty_ledger_env_variable_is_ignored(tmp_path: Path) -> None:
    config = _with_ledger(tmp_path, "file.db")
    assert Path(config.ledger_location({"SHEET_BRIDGE_LEDGER": ""})) == tmp_path / "file.db"


def test_ledger_without_xdg_falls_back_to_local_share(tmp_path: Path) -> None:
    config = _with_ledger(tmp_path, None)
    assert (
        Path(config.ledger_location({}))
        == Path.home() / ".local" / "share" / "sheet-bridge" / "ledger.db"
    )


# ---- requests in flight ----------------------------------------------------------------------


def test_max_in_flight_defaults_to_four_and_the_example_documents_it() -> None:
    assert parse_config(config_data()).meta.max_in_flight == 4
    assert load_config(EXAMPLE).meta.max_in_flight == 4
    assert "max_in_flight = 4" in EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.parametrize("value", [0, -1, 17, "four"])
def test_max_in_flight_outside_one_to_sixteen_names_the_key(value: object) -> None:
    meta = {**BASE["meta"], "max_in_flight": value}
    with pytest.raises(ConfigError) as err:
        parse_config(config_data(meta=meta))
    assert "meta.max_in_flight" in str(err.value)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (config_data(meta={"pixel_id": "1", "currency": "XYZ"}), "is not an ISO 4217 currency"),
        (config_data(meta={"pixel_id": "1", "currency": "XAU"}), "is not an ISO 4217 currency"),
        (
            config_data(stages=[{"status": "New", "event": "Lead", "value": 0}]),
            "value 0 is 0",
        ),
        (
            config_data(stages=[{"status": "New", "event": "Lead", "value": 1e13}]),
            "too large",
        ),
        (
            config_data(stages=[{"status": "New", "event": "Lead", "value": float("inf")}]),
            "not a finite number",
        ),
    ],
)
def test_a_currency_or_stage_value_meta_could_not_take_is_a_config_error(
    data: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_config(data, source="b.toml")
