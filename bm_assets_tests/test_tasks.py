"""Task config validation, split dates, eligibility and targets on a tiny hand-made events table."""

from __future__ import annotations

import datetime as dt
import textwrap

import numpy as np
import pandas as pd
import pytest

from bm_assets.config import TemporalSplit
from bm_assets.core.features import aggregate_features
from bm_assets.core.tasks import (
    EvaluationConfig,
    ModelingConfig,
    TaskConfigError,
    TaskSpec,
    build_labels,
    check_target_not_empty,
    check_task_sql,
    eligible_clients,
    is_holdout,
    load_modeling_config,
    protocol_dates,
    task_labels,
    tasks_path_for,
)
from bm_assets.settings import BUNDLED_DATASET

T = dt.date(2017, 3, 1)
D = dt.timedelta


def _events(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(
        rows,
        columns=[
            "client_id",
            "event_date",
            "event_type",
            "item_id",
            "manufacturer_id",
            "product_category",
            "value",
        ],
    )
    df["event_time"] = pd.to_datetime(df["event_date"]) + pd.Timedelta(hours=12)
    df["basket_id"] = df["client_id"] + df["event_date"].astype(str)
    df["quantity"] = 1
    return df


def _load(wh, df: pd.DataFrame) -> None:
    wh.con.register("__df", df)
    wh.execute(["CREATE OR REPLACE TABLE events_denormalized AS SELECT * FROM __df"])
    wh.con.unregister("__df")


# Client a: purchases at T-1 (input side), T and T+13 (inside a 14-day window), T+14 (outside).
# Client b: last purchase exactly 30 days before T; client c: 31 days before; d: only a coupon.
ROWS = [
    ("a", T - D(1), "purchase", "i1", "m1", "c1", 5.0),
    ("a", T, "purchase", "i1", "m1", "c1", 2.0),
    ("a", T + D(13), "purchase", "i2", "m2", "c2", 3.0),
    ("a", T + D(14), "purchase", "i3", "m3", "c3", 100.0),
    ("b", T - D(30), "purchase", "i1", "m1", "c1", 1.0),
    ("b", T + D(3), "purchase", "i1", "m2", "c1", 4.0),
    ("c", T - D(31), "purchase", "i2", "m2", "c2", 1.0),
    ("d", T - D(2), "coupon_redemption", "coupon:1", None, None, None),
]


def _task(**kw) -> TaskSpec:
    base = dict(
        name="t",
        type="binary",
        horizon_days=14,
        target={"value": "count(*) FILTER (WHERE event_type = 'purchase') = 0", "default": 1},
        eligible={"active_days": 30, "where": "event_type = 'purchase'"},
    )
    base.update(kw)
    return TaskSpec.model_validate(base)


def test_bundled_tasks_config_loads():
    cfg = load_modeling_config(tasks_path_for(BUNDLED_DATASET))
    assert {t.name for t in cfg.tasks} == {
        "brand_propensity",
        "category_propensity",
        "churn",
        "next_purchases",
        "spend",
    }
    assert cfg.task("next_purchases").metrics == ["ndcg@10", "hitrate@10"]


def test_eligibility_window_edges(warehouse):
    _load(warehouse, _events(ROWS))
    ex = eligible_clients(warehouse, _task().eligible, [T])
    # b's purchase 30 days before T is inside [T-30, T); c's 31 days before is not; d only redeemed.
    assert ex["client_id"].tolist() == ["a", "b"]
    assert set(ex["t"]) == {T}


def test_binary_and_regression_targets_respect_window_edges(warehouse):
    _load(warehouse, _events(ROWS))
    ex = pd.DataFrame({"client_id": ["a", "b", "c"], "t": [T, T, T]})
    churn = build_labels(warehouse, _task(), ex, None)
    np.testing.assert_array_equal(churn, [0, 0, 1])  # c has no future row: the default applies
    spend = _task(type="regression", target={"value": "coalesce(sum(value), 0)", "default": 0})
    # a: T (2.0) and T+13 (3.0) count, T-1 and T+14 do not.
    np.testing.assert_allclose(build_labels(warehouse, spend, ex, None), [5.0, 4.0, 0.0])


def test_multilabel_and_multiclass_targets(warehouse):
    _load(warehouse, _events(ROWS))
    ex = pd.DataFrame({"client_id": ["a", "b", "c"], "t": [T, T, T]})
    task = _task(type="multilabel", target={"column": "manufacturer_id", "top_n": 3})
    y = build_labels(warehouse, task, ex, ["m1", "m2", "m3"])
    np.testing.assert_array_equal(y, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])  # m3 is at T+14: outside
    mc = _task(type="multiclass", target={"column": "product_category", "top_n": 2})
    np.testing.assert_array_equal(build_labels(warehouse, mc, ex, ["c1", "c2"]), [0, 0, -1])


def test_top_labels_ignore_events_after_cutoff(warehouse):
    rows = ROWS + [("z", T + D(40 + i), "purchase", "i9", "m9", "c9", 1.0) for i in range(20)]
    _load(warehouse, _events(rows))
    task = _task(type="multilabel", target={"column": "manufacturer_id", "top_n": 2})
    assert task_labels(warehouse, task, cutoff=T + D(30), candidates=10) == ["m1", "m2"]
    assert task_labels(warehouse, task, cutoff=T + D(90), candidates=10)[0] == "m9"


def test_features_do_not_see_events_at_or_after_the_split(warehouse):
    ev = EvaluationConfig(feature_columns=["manufacturer_id"], feature_top_n=3)
    tops = {"manufacturer_id": ["m1", "m2", "m3"]}
    ex = pd.DataFrame({"client_id": ["a", "b"], "t": [T, T]})
    _load(warehouse, _events(ROWS))
    before, names = aggregate_features(warehouse, ex, ev, tops)
    poison = [(c, T + D(k), "purchase", "i1", "m1", "c1", 1e6) for c in "ab" for k in (0, 1, 20)]
    _load(warehouse, _events(ROWS + poison))
    after, _ = aggregate_features(warehouse, ex, ev, tops)
    np.testing.assert_array_equal(before, after)
    # ...while an extra event the day before T does change them (the check is not vacuous).
    _load(warehouse, _events(ROWS + [("b", T - D(1), "purchase", "i1", "m1", "c1", 7.0)]))
    changed, _ = aggregate_features(warehouse, ex, ev, tops)
    assert not np.array_equal(before, changed)
    assert changed[1, names.index("recency_days")] == 1
    assert before[0, names.index("value_7d")] == 5.0


def test_protocol_dates_keep_label_windows_apart():
    split = TemporalSplit(
        training_cutoff=dt.date(2017, 10, 1), test_start=dt.date(2017, 11, 15), test_end=dt.date(2018, 1, 1)
    )
    dates = protocol_dates(dt.date(2017, 1, 1), split, EvaluationConfig(), horizon_days=14)
    h = D(14)
    assert max(dates["train"]) + h <= split.training_cutoff
    assert min(dates["validation"]) == split.training_cutoff and max(dates["validation"]) + h <= split.test_start
    assert min(dates["test"]) == split.test_start and max(dates["test"]) + h <= split.test_end
    with pytest.raises(TaskConfigError, match="no validation split date fits a 60-day horizon"):
        protocol_dates(dt.date(2017, 1, 1), split, EvaluationConfig(), horizon_days=60)


def test_holdout_is_stable_and_sized():
    ids = np.array([str(i) for i in range(5000)])
    first = is_holdout(ids, 0.1)
    np.testing.assert_array_equal(first, is_holdout(ids[::-1], 0.1)[::-1])
    assert 0.08 < first.mean() < 0.12


def _write(tmp_path, body: str):
    path = tmp_path / "tasks.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_bad_horizon_names_file_and_key(tmp_path):
    path = _write(
        tmp_path,
        """
        tasks:
          - name: churn
            type: binary
            horizon_days: 0
            target: {value: "count(*) = 0", default: 1}
    """,
    )
    with pytest.raises(TaskConfigError, match=r"tasks\.yaml: key tasks\[0\] \(churn\)\.horizon_days: .*greater than 0"):
        load_modeling_config(path)


def test_task_dropout_outside_zero_to_one_names_file_and_key(tmp_path):
    path = _write(
        tmp_path,
        """
        evaluation: {task_dropout: 1.0}
        tasks:
          - name: churn
            type: binary
            horizon_days: 14
            target: {value: "count(*) = 0", default: 1}
    """,
    )
    with pytest.raises(TaskConfigError, match=r"tasks\.yaml: key evaluation\.task_dropout: .*less than 1"):
        load_modeling_config(path)


@pytest.mark.parametrize(("value", "message"), [(-1, "greater than or equal to 0"), (300, "less than or equal to 256")])
def test_dense_bins_out_of_range_names_file_and_key(tmp_path, value, message):
    path = _write(
        tmp_path,
        f"""
        evaluation: {{dense_bins: {value}}}
        tasks:
          - name: churn
            type: binary
            horizon_days: 14
            target: {{value: "count(*) = 0", default: 1}}
    """,
    )
    with pytest.raises(TaskConfigError, match=rf"tasks\.yaml: key evaluation\.dense_bins: .*{message}"):
        load_modeling_config(path)


def test_empty_target_expression_and_wrong_metric_fail(tmp_path):
    path = _write(
        tmp_path,
        """
        tasks:
          - name: spend
            type: regression
            horizon_days: 14
            target: {value: "  "}
    """,
    )
    with pytest.raises(TaskConfigError, match=r"tasks\[0\] \(spend\)\.target\.value: .*is empty"):
        load_modeling_config(path)
    path = _write(
        tmp_path,
        """
        tasks:
          - {name: churn, type: binary, horizon_days: 7, target: {value: "true"}, metrics: [rmse]}
    """,
    )
    with pytest.raises(TaskConfigError, match=r"metrics \['rmse'\] do not apply to binary"):
        load_modeling_config(path)


def test_unknown_column_fails_before_training(warehouse, tmp_path):
    _load(warehouse, _events(ROWS))
    path = _write(
        tmp_path,
        """
        tasks:
          - name: brands
            type: multilabel
            horizon_days: 14
            target: {column: no_such_column, top_n: 5}
    """,
    )
    cfg = load_modeling_config(path)
    with pytest.raises(
        TaskConfigError, match=r"tasks\.yaml: tasks\[0\] \(brands\)\.target\.column: unknown column 'no_such_column'$"
    ):
        check_task_sql(warehouse, cfg)


def test_target_that_is_never_positive_is_rejected(warehouse):
    _load(warehouse, _events(ROWS))
    task = _task(target={"value": "count(*) > 1000", "default": 0})
    ex = eligible_clients(warehouse, task.eligible, [T])
    y = build_labels(warehouse, task, ex, None)
    with pytest.raises(TaskConfigError, match="target is empty: no positive label among 2 train examples"):
        check_target_not_empty(task, y, "train")


def test_duplicate_task_names_rejected():
    t = _task().model_dump()
    with pytest.raises(ValueError, match="duplicate task names"):
        ModelingConfig.model_validate({"tasks": [t, t]})


def test_training_examples_and_labels_ignore_events_from_the_cutoff_on(warehouse):
    split = TemporalSplit(training_cutoff=T + D(28), test_start=T + D(56), test_end=T + D(90))
    dates = protocol_dates(T - D(28), split, EvaluationConfig(warmup_days=0, split_every_days=7), 14)["train"]
    task = _task(type="regression", target={"value": "coalesce(sum(value), 0)", "default": 0})

    def build(rows):
        _load(warehouse, _events(rows))
        ex = eligible_clients(warehouse, task.eligible, dates)
        return ex, build_labels(warehouse, task, ex, None)

    ex0, y0 = build(ROWS)
    poison = [(c, split.training_cutoff + D(k), "purchase", "i1", "m1", "c1", 1e6) for c in "abz" for k in (0, 3)]
    ex1, y1 = build(ROWS + poison)
    pd.testing.assert_frame_equal(ex0, ex1)
    np.testing.assert_array_equal(y0, y1)
    # One day earlier the same event is inside the last training window: the check can fail.
    _, y2 = build(ROWS + [("a", split.training_cutoff - D(1), "purchase", "i1", "m1", "c1", 1e6)])
    assert y2.max() >= 1e6


def test_task_stage_connections_cannot_touch_files(tmp_path):
    """Defence in depth behind the SQL allow-list: the connection the task stages open cannot
    read or write files, yet tables and data frames work; the next plain connection is normal."""
    import duckdb

    from bm_assets.resources import DuckDBWarehouseResource

    res = DuckDBWarehouseResource(database=str(tmp_path / "w.duckdb"))
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    with res.open(sandboxed=True) as wh:
        wh.execute(["CREATE TABLE t AS SELECT 1 AS a"])
        wh.insert_df("u", pd.DataFrame({"a": [1, 2]}))
        assert int(wh.fetch_df("SELECT count(*) AS n FROM u")["n"].iloc[0]) == 2
        with pytest.raises(duckdb.PermissionException):
            wh.fetch_df(f"SELECT * FROM read_csv('{outside}')")
        with pytest.raises(duckdb.PermissionException):
            wh.execute([f"COPY t TO '{tmp_path / 'copied.csv'}'"])
    assert not (tmp_path / "copied.csv").exists()
    with res.open() as wh:
        assert len(wh.fetch_df(f"SELECT * FROM read_csv('{outside}')")) == 1


def test_profiles_carry_the_columns_tasks_target():
    """The bundled YAML sketches item, category and department; its brand task targets
    manufacturer_id, so the pipeline's config sketches that too; a task on a column outside the
    graph (brand) adds it to both graph and sketch; numeric or absent columns are never added."""
    from bm_assets.config import load_dataset_config
    from bm_assets.core.tasks import load_dataset_for_tasks, with_task_columns

    plain = load_dataset_config(BUNDLED_DATASET)
    assert "manufacturer_id" not in plain.representation.sketch_columns
    cfg = load_dataset_for_tasks(BUNDLED_DATASET)
    assert cfg.representation.sketch_columns == [*plain.representation.sketch_columns, "manufacturer_id"]
    assert cfg.representation.graph.columns == plain.representation.graph.columns  # already a graph column
    extra = ModelingConfig(
        tasks=[
            TaskSpec(name="brand", type="multilabel", horizon_days=7, target={"column": "brand", "top_n": 2}),
            TaskSpec(name="qty", type="multiclass", horizon_days=7, target={"column": "quantity", "top_n": 2}),
        ]
    )
    widened = with_task_columns(plain, extra)
    assert widened.representation.graph.columns[-1] == "brand" and "brand" in widened.representation.sketch_columns
    assert "quantity" not in widened.representation.graph.columns
    assert with_task_columns(widened, extra) == widened
