import pandas as pd
import pytest
import yaml

from bm_assets.config import DatasetConfigError, load_dataset_config
from bm_assets.settings import BUNDLED_DATASET
from bm_assets_tests.factories import HEADER, write_dataset

GOOD = HEADER + "e1,1,A,2024-01-02 10:00:00,1,2.5,s1\n"


def _edit(path, mutate):
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_bundled_sample_config_loads():
    cfg = load_dataset_config(BUNDLED_DATASET)
    assert [s.name for s in cfg.events] == ["purchase", "coupon_redemption"]
    assert (cfg.data_end - cfg.data_start).days + 1 == 366


def test_missing_column_names_key_and_file(tmp_path):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["events"][0].update(item_id="product"))
    with pytest.raises(DatasetConfigError) as err:
        load_dataset_config(path)
    msg = str(err.value)
    assert str(path) in msg and "item_id" in msg and "'product'" in msg and "events.csv" in msg


def test_unknown_role_is_rejected(tmp_path):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["events"][0].update(basket="x"))
    with pytest.raises(DatasetConfigError, match=r"events\.0\.basket"):
        load_dataset_config(path)


@pytest.mark.parametrize("fmt", ["%Y-%Q-%d", "no directives"])
def test_bad_timestamp_format(tmp_path, fmt):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["events"][0]["timestamp"].update(format=fmt))
    with pytest.raises(DatasetConfigError, match=r"events\.0\.timestamp\.format"):
        load_dataset_config(path)


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        ({"format": "%Y-%m-%d", "unit": "ms"}, r"events\.0\.timestamp.*format.*or timestamp\.unit.*not both"),
        ({"unit": "minutes"}, r"events\.0\.timestamp\.unit"),
    ],
)
def test_bad_unix_time_unit(tmp_path, timestamp, message):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["events"][0]["timestamp"].update(timestamp))
    with pytest.raises(DatasetConfigError, match=message):
        load_dataset_config(path)


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ({"header": False}, r"events\.0\.csv.*name the file's columns in csv\.columns"),
        ({"columns": ["a", "b"]}, r"events\.0\.csv.*set csv\.header: false"),
        ({"delimiter": ";;"}, r"events\.0\.csv\.delimiter"),
        (
            {"header": False, "columns": ["event_id", "client", "item", "when", "qty", "amount", "shop"]},
            r"events\[0\] \(purchase\)\.timestamp names column 'ts', which is not in .*events\.csv \(columns: "
            r"\['amount', 'client', 'event_id', 'item', 'qty', 'shop', 'when'\]\)",
        ),
    ],
)
def test_bad_csv_layout(tmp_path, csv, message):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["events"][0].update(csv=csv))
    with pytest.raises(DatasetConfigError, match=message):
        load_dataset_config(path)


@pytest.mark.parametrize("columns", [["a", "b", "c", "d", "e", "f"], ["a", "b", "c", "d", "e", "f", "g", "h"]])
def test_headerless_csv_needs_a_name_per_column(tmp_path, columns):
    path = _edit(
        write_dataset(tmp_path, "e1,1,A,2024-01-02 10:00:00,1,2.5,s1\n"),
        lambda c: c["events"][0].update(csv={"header": False, "columns": columns}),
    )
    with pytest.raises(
        DatasetConfigError,
        match=rf"events\[0\]\.path: .*events\.csv: csv\.columns names {len(columns)} column\(s\) "
        r"but the file's lines have 7",
    ):
        load_dataset_config(path)


@pytest.mark.parametrize("role", ["events", "items"])
def test_unknown_file_ending_needs_a_format_key(tmp_path, role):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c[role][0].update(path="export.xlsx"))
    with pytest.raises(DatasetConfigError, match=rf"{role}\.0.*cannot infer format of 'export\.xlsx'.*set format"):
        load_dataset_config(path)


def test_csv_layout_on_a_parquet_source_is_refused(tmp_path):
    pd.DataFrame({"client": ["1"]}).to_parquet(tmp_path / "events.parquet")
    path = _edit(
        write_dataset(tmp_path, GOOD),
        lambda c: c["events"][0].update(path="events.parquet", csv={"delimiter": ";"}),
    )
    with pytest.raises(DatasetConfigError, match=r"events\.0.*csv options apply to CSV files only"):
        load_dataset_config(path)


def test_missing_file_and_bad_dates(tmp_path):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["items"][0].update(path="nope.csv"))
    with pytest.raises(DatasetConfigError, match=r"items\[0\]\.path: file .*nope\.csv does not exist"):
        load_dataset_config(path)
    path = _edit(write_dataset(tmp_path / "b", GOOD), lambda c: c.update(data_end="2023-12-01"))
    with pytest.raises(DatasetConfigError, match="before data_start"):
        load_dataset_config(path)


def test_attribute_collision_with_event_column(tmp_path):
    path = write_dataset(tmp_path, GOOD, items_csv="sku,brand,shop\nA,b1,s\n")
    _edit(path, lambda c: c["items"][0].update(columns={"brand": "categorical", "shop": "categorical"}))
    with pytest.raises(DatasetConfigError, match="collides with event column 'shop'"):
        load_dataset_config(path)


def test_base_dir_expands_environment_variables(tmp_path, monkeypatch):
    path = write_dataset(tmp_path / "real", GOOD)
    _edit(path, lambda c: c.update(base_dir="${BM_TEST_DATA:-/nowhere}"))
    monkeypatch.setenv("BM_TEST_DATA", str(tmp_path / "real"))
    assert load_dataset_config(path).base_dir == tmp_path / "real"
    monkeypatch.delenv("BM_TEST_DATA")
    with pytest.raises(DatasetConfigError, match="/nowhere/events.csv does not exist"):
        load_dataset_config(path)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"sh\x00op": "categorical"}, "control character"),
        ({"s" * 256: "categorical"}, "256 characters long; at most 255"),
        ({"Shop": "categorical", "shop": "numeric"}, "are the same SQL column"),
        ({"__file": "categorical"}, "reserves for its own columns"),
        ({"Client_ID": "categorical"}, "reuses the column name 'client_id'"),
    ],
)
def test_unrepresentable_context_names_are_refused_at_load(tmp_path, context, expected):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["events"][0].update(context=context))
    with pytest.raises(DatasetConfigError) as err:
        load_dataset_config(path)
    assert str(path) in str(err.value) and "context" in str(err.value) and expected in str(err.value)


def test_attribute_name_that_is_a_context_column_in_another_case_is_refused(tmp_path):
    path = _edit(write_dataset(tmp_path, GOOD), lambda c: c["items"][0].update(columns={"SHOP": "categorical"}))
    (tmp_path / "items.csv").write_text("sku,SHOP\nA,x\n")
    with pytest.raises(DatasetConfigError, match=r"items\[0\]\.columns\.SHOP collides with event column 'shop'"):
        load_dataset_config(path)


def test_empty_csv_says_the_file_is_empty(tmp_path):
    path = write_dataset(tmp_path, b"")
    with pytest.raises(DatasetConfigError, match=r"events\[0\]\.path: .*events\.csv: the file is empty \(0 bytes\)"):
        load_dataset_config(path)


def test_empty_csv_at_run_time_says_the_file_is_empty(tmp_path, warehouse):
    """A file emptied after the config loaded stops the ingest with the same message."""
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.warehouse import SourceReadError

    cfg = load_dataset_config(write_dataset(tmp_path, GOOD))
    (tmp_path / "events.csv").write_bytes(b"")
    with pytest.raises(SourceReadError, match="events.csv: the file is empty"):
        ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)


def test_latin1_dataset_yaml_is_named_as_not_utf8(tmp_path):
    path = write_dataset(tmp_path, GOOD)
    path.write_bytes(path.read_bytes().replace(b"name: test", "name: café".encode("latin-1")))
    with pytest.raises(DatasetConfigError) as err:
        load_dataset_config(path)
    assert str(path) in str(err.value) and "not UTF-8 (byte 0xe9 on line 1)" in str(err.value)


def test_latin1_tasks_yaml_is_named_as_not_utf8(tmp_path):
    from bm_assets.core.tasks import TaskConfigError, load_modeling_config

    path = tmp_path / "tasks.yaml"
    path.write_bytes("tasks: []  # é\n".encode("latin-1"))
    with pytest.raises(TaskConfigError, match=f"{path}: not UTF-8"):
        load_modeling_config(path)


def test_mixed_line_endings_are_named_without_the_files_content(tmp_path):
    """Header ending in LF, data in CRLF: DuckDB's sniffer gives up; the message says why."""
    data = GOOD.replace("\n", "\r\n").replace("\r\n", "\n", 1).encode()
    with pytest.raises(DatasetConfigError) as err:
        load_dataset_config(write_dataset(tmp_path, data))
    msg = str(err.value)
    assert "events.csv: mixed line endings (some lines end in CRLF, others in LF)" in msg
    assert "sniff" not in msg and "2024-01-02" not in msg and "\n" not in msg


@pytest.mark.parametrize("relative", ["../outside/events.csv", "sub/../../outside/*.csv"])
def test_relative_paths_may_not_leave_base_dir(tmp_path, relative):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "events.csv").write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = _edit(write_dataset(tmp_path / "ds", GOOD), lambda c: c["events"][0].update(path=relative))
    with pytest.raises(DatasetConfigError) as err:
        load_dataset_config(path)
    msg = str(err.value)
    assert f"path {relative!r} leaves base_dir {tmp_path / 'ds'}" in msg and "absolute path" in msg
    assert "root:x" not in msg


def test_absolute_path_outside_base_dir_is_allowed(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "events.csv").write_text(GOOD)
    absolute = str(tmp_path / "elsewhere" / "events.csv")
    path = _edit(write_dataset(tmp_path / "ds", GOOD), lambda c: c["events"][0].update(path=absolute))
    assert load_dataset_config(path).resolve(load_dataset_config(path).events[0].path) == absolute


def test_wrong_file_error_does_not_echo_its_first_line(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/bin/false\n")
    path = _edit(write_dataset(tmp_path / "ds", GOOD), lambda c: c["events"][0].update(path=str(secret), format="csv"))
    with pytest.raises(DatasetConfigError) as err:
        load_dataset_config(path)
    assert "none of them mapped: is this the right file" in str(err.value) and "root:x" not in str(err.value)


def test_an_exact_head_column_must_be_sketched(tmp_path):
    path = _edit(
        write_dataset(tmp_path, GOOD),
        lambda c: c.setdefault("representation", {}).update(sketch={"exact_head_columns": ["colour"]}),
    )
    with pytest.raises(DatasetConfigError, match=r"representation: sketch\.exact_head_columns \['colour'\] are not"):
        load_dataset_config(path)
