"""`bm-assets init` writes starter YAMLs that load as they are, and docs/configuration.md stays
in step with the config models it documents."""

import csv
import datetime as dt
import json
import random

import pandas as pd
import pytest
import yaml

from bm_assets.cli import main
from bm_assets.config import AttributeTable, Derived, EventSource, TimestampSpec, load_dataset_config
from bm_assets.config_reference import REFERENCE_FILE, render_reference
from bm_assets.core.tasks import EvaluationConfig, TaskSpec, load_modeling_config
from bm_assets.starter import StarterError, write_starter


def _invoice_lines(path, days: int = 70):
    """Online-Retail-like invoice lines: US dates, a country per customer, some lines without one."""
    rng = random.Random(0)
    countries = {str(12000 + i): ["United Kingdom", "France", "Germany", "Spain"][i % 4] for i in range(30)}
    products = {f"8{i:04d}": f"PRODUCT {i}" for i in range(20)}
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
        )
        for invoice in range(300):
            at = dt.datetime(2010, 12, 1, 8) + dt.timedelta(days=invoice * days // 300, minutes=rng.randint(0, 600))
            customer = rng.choice(list(countries))
            for _ in range(rng.randint(1, 4)):
                code = rng.choice(list(products))
                out.writerow(
                    [
                        536000 + invoice,
                        code,
                        products[code],
                        rng.randint(1, 12),
                        at.strftime("%m/%d/%Y %H:%M"),
                        f"{rng.uniform(0.5, 9):.2f}",
                        "" if invoice % 10 == 0 else customer,
                        countries[customer],
                    ]
                )
    return path


def _purchase_log(path):
    """A CDNOW-like log without items: customer, yyyymmdd date, item count, amount."""
    rng = random.Random(1)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["customer_id", "date", "n_items", "amount"])
        for _ in range(400):
            day = dt.date(1997, 1, 1) + dt.timedelta(days=rng.randint(0, 90))
            out.writerow([rng.randint(1, 50), day.strftime("%Y%m%d"), rng.randint(1, 5), f"{rng.uniform(5, 80):.2f}"])
    return path


def test_reference_doc_is_current():
    assert REFERENCE_FILE.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is out of date with the config models: run `python -m bm_assets.config_reference`"
    )


@pytest.mark.parametrize("model", [EventSource, AttributeTable, TaskSpec, EvaluationConfig])
def test_reference_documents_every_field(model):
    text = render_reference()
    assert [f for f in model.model_fields if f".{f}`" not in text] == []


def test_reference_lists_the_expression_functions():
    text = render_reference()
    assert "## Expressions" in text
    assert "coalesce, concat" in text and "COALESCE" not in text


def test_starter_for_invoice_lines(tmp_path):
    events = _invoice_lines(tmp_path / "online_retail.csv")
    dataset, tasks = write_starter([str(events)], None, None, tmp_path)
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert src.path == "online_retail.csv"
    assert (src.client_id, src.item_id, src.basket_id, src.quantity) == (
        "CustomerID",
        "StockCode",
        "InvoiceNo",
        "Quantity",
    )
    assert src.value == Derived(expr="Quantity * UnitPrice")
    assert src.timestamp == TimestampSpec(column="InvoiceDate", format="%m/%d/%Y %H:%M")
    assert cfg.baskets == "timestamp"  # every line has its invoice
    assert src.context_kinds() == {"Description": "categorical", "UnitPrice": "numeric"}
    (home,) = cfg.clients
    assert (home.from_events, home.columns, home.pick) == ("online_retail", {"Country": "categorical"}, "most_frequent")
    assert (cfg.data_start, cfg.data_end) == (dt.date(2010, 12, 1), dt.date(2011, 2, 8))
    t = cfg.temporal
    assert (t.test_start - t.training_cutoff).days >= 14 and (t.test_end - t.test_start).days >= 14
    assert t.test_end == cfg.data_end + dt.timedelta(days=1)

    mcfg = load_modeling_config(tasks)
    assert [(x.name, x.type) for x in mcfg.tasks] == [
        ("churn", "binary"),
        ("spend", "regression"),
        ("next_purchases", "recommendation"),
    ]
    assert all(x.horizon_days <= 14 for x in mcfg.tasks)
    assert all(x.target.where == "TRUE" for x in mcfg.tasks)  # one event type: every line is a purchase
    assert mcfg.evaluation.warmup_days + 14 <= (t.training_cutoff - cfg.data_start).days

    text = dataset.read_text()
    assert yaml.safe_load(text)["events"][0]["value"] == {"expr": "Quantity * UnitPrice"}
    assert "client_id: CustomerID                   # guessed from the column name" in text
    assert "# Temporal protocol" in text and "# Event sources" in text and "# Client attributes" in text
    task_text = tasks.read_text()
    assert "# The self-supervised foundation model" in task_text and "# The temporal protocol's knobs" in task_text


def test_starter_for_a_log_without_items(tmp_path):
    dataset, tasks = write_starter([str(_purchase_log(tmp_path / "purchases.csv"))], None, None, tmp_path / "cfg")
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert src.path == str(tmp_path / "purchases.csv")  # outside the output folder: absolute
    assert src.item_id is None and not cfg.items and not cfg.clients
    assert (src.client_id, src.quantity, src.value) == ("customer_id", "n_items", "amount")
    assert src.timestamp == TimestampSpec(column="date", format="%Y%m%d")
    assert [x.name for x in load_modeling_config(tasks).tasks] == ["churn", "spend"]
    assert "# not guessed: item_id, event_type, basket_id" in dataset.read_text()


def test_starter_takes_the_price_for_the_value_of_one_unit_lines_and_no_id_for_an_amount(tmp_path):
    """An H&M-like log: one line per article bought, a price and no quantity, and an id whose
    name has a value word in it (sales_channel_id) but is no amount."""
    rng = random.Random(3)
    rows = [
        (
            f"2020-01-{rng.randint(1, 28):02d}",
            f"c{rng.randint(1, 40)}",
            f"0{rng.randint(10**8, 10**9)}",
            rng.random() / 20,
            rng.randint(1, 2),
        )
        for _ in range(300)
    ]
    pd.DataFrame(rows, columns=["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]).to_csv(
        tmp_path / "transactions.csv", index=False
    )
    dataset, _ = write_starter([str(tmp_path / "transactions.csv")], None, None, tmp_path / "c")
    (src,) = load_dataset_config(dataset).events
    assert (src.value, src.quantity) == ("price", None)
    assert src.context_kinds() == {"sales_channel_id": "categorical"}
    assert "one unit at price" in dataset.read_text()


def test_starter_takes_an_id_its_name_does_not_reveal_from_the_attribute_file_key(tmp_path):
    """A Food.com-like log: recipe_id has no item word, but recipes.csv is keyed by it."""
    rng = random.Random(4)
    start = dt.datetime(2015, 1, 1, tzinfo=dt.UTC).timestamp()
    ratings = [
        (rng.randint(1, 30), rng.randint(1, 25), rng.randint(1, 10) / 2, round(start + i * 7_919)) for i in range(400)
    ]
    pd.DataFrame(ratings, columns=["userId", "recipe_id", "rating", "timestamp"]).to_csv(
        tmp_path / "ratings.csv", index=False
    )
    genres = ["Comedy", "Drama", "Horror"]
    recipes = [(m, f"Recipe {m}", genres[m % 3]) for m in range(1, 26)]
    pd.DataFrame(recipes, columns=["recipe_id", "title", "genres"]).to_csv(tmp_path / "recipes.csv", index=False)
    dataset, tasks = write_starter([str(tmp_path / "ratings.csv")], None, str(tmp_path / "recipes.csv"), tmp_path / "c")
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert (src.client_id, src.item_id) == ("userId", "recipe_id")
    assert src.context_kinds() == {"rating": "numeric"}
    assert cfg.items[0].key == "recipe_id" and "the key of recipes.csv has this name" in dataset.read_text()
    assert "next_purchases" in [t.name for t in load_modeling_config(tasks).tasks]


def test_starter_reads_a_view_cart_purchase_log(tmp_path):
    """A multi-category-store log (views, carts, purchases; a session id; price on every line):
    the session is the basket, and spend and next purchases count purchases only."""
    rng = random.Random(5)
    rows = []
    for i in range(600):
        user = rng.randint(1, 40)
        at = dt.datetime(2019, 10, 1) + dt.timedelta(seconds=i * 4_001)
        kind = rng.choice(["view"] * 6 + ["cart", "purchase", "order_cancelled"])
        product = rng.randint(1, 30)
        rows.append(
            (
                f"{at:%Y-%m-%d %H:%M:%S} UTC",
                kind,
                product,
                f"b{product % 4}",
                round(rng.uniform(5, 500), 2),
                user,
                f"s{user}-{i // 20}",
            )
        )
    columns = ["event_time", "event_type", "product_id", "brand", "price", "user_id", "user_session"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "events.csv", index=False)
    dataset, tasks = write_starter([str(tmp_path / "events.csv")], None, None, tmp_path / "c")
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert (src.basket_id, src.value, src.event_type) == ("user_session", "price", "event_type")
    # a brand on every product line is an item attribute, and the propensity task's target
    (items,) = cfg.items
    assert (items.from_events, items.columns) == (src.name, {"brand": "categorical"})
    by_name = {t.name: t for t in load_modeling_config(tasks).tasks}
    assert by_name["brand_propensity"].target.column == "brand"
    assert by_name["spend"].target.where == "(event_type = 'purchase')"
    assert by_name["next_purchases"].target.where == "(event_type = 'purchase')"
    # a client who still browses but stopped buying is a lost customer; a propensity is to buy
    assert by_name["churn"].target.where == "(event_type = 'purchase')"
    assert by_name["churn"].eligible.where == "(event_type = 'purchase')"
    assert by_name["brand_propensity"].target.where == "(event_type = 'purchase')"
    # a session number counted per client is no basket: its values are shared by clients
    frame = pd.DataFrame(rows, columns=columns)
    frame["user_session"] = [i % 5 for i in range(len(frame))]
    frame.to_csv(tmp_path / "events.csv", index=False)
    dataset, _ = write_starter([str(tmp_path / "events.csv")], None, None, tmp_path / "d")
    assert load_dataset_config(dataset).events[0].basket_id is None
    assert "user_session (100% of its values have several clients in the sample: not a basket)" in dataset.read_text()


def test_starter_reads_numbered_codes_and_one_file_per_event_type(tmp_path):
    """A log split into one Parquet file per event type (buys, carts, page visits) with an
    item table whose categories are numbered: a whole-number column named like a code
    (category, url) is categorical, a price bucket stays numeric, every task is about buying."""
    rng = random.Random(8)
    start = dt.datetime(2022, 6, 23)

    def events(n: int, column: str, values: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "client_id": [rng.randint(1, 60) for _ in range(n)],
                "timestamp": [
                    f"{start + dt.timedelta(minutes=rng.randint(0, 90 * 1440)):%Y-%m-%d %H:%M:%S}" for _ in range(n)
                ],
                column: [rng.randint(1, values) * 7 for _ in range(n)],
            }
        )

    events(300, "sku", 40).to_parquet(tmp_path / "product_buy.parquet")
    events(600, "sku", 40).to_parquet(tmp_path / "add_to_cart.parquet")
    events(2000, "url", 300).to_parquet(tmp_path / "page_visit.parquet")
    pd.DataFrame(
        {
            "sku": [7 * i for i in range(1, 41)],
            "category": [1000 + i % 6 for i in range(1, 41)],
            "price": [rng.randint(0, 99) for _ in range(40)],
        }
    ).to_parquet(tmp_path / "product_properties.parquet")
    paths = [str(tmp_path / f"{n}.parquet") for n in ("product_buy", "add_to_cart", "page_visit")]
    dataset, tasks = write_starter(paths, None, str(tmp_path / "product_properties.parquet"), tmp_path / "c")
    cfg = load_dataset_config(dataset)
    assert [(s.name, s.item_id) for s in cfg.events] == [
        ("product_buy", "sku"),
        ("add_to_cart", "sku"),
        ("page_visit", None),
    ]
    assert cfg.events[2].context_kinds() == {"url": "categorical"}
    (items,) = cfg.items
    assert items.columns == {"category": "categorical", "price": "numeric"}
    by_name = {t.name: t for t in load_modeling_config(tasks).tasks}
    assert set(by_name) == {"churn", "next_purchases", "category_propensity"}
    assert {t.target.where for t in by_name.values()} == {"(event_type = 'product_buy')"}
    assert by_name["churn"].eligible.where == "(event_type = 'product_buy')"


def _random_log(path, rng, columns: list[str], clients: int, items: list[str], n: int, hours: int) -> str:
    """A CSV of n events (client, item, time), one every `hours` from 2020-01-01."""
    at = dt.datetime(2020, 1, 1)
    events = [
        (rng.randint(1, clients), rng.choice(items), f"{at + dt.timedelta(hours=hours * i):%Y-%m-%d %H:%M:%S}")
        for i in range(n)
    ]
    pd.DataFrame(events, columns=columns).to_csv(path, index=False)
    return str(path)


def test_starter_tells_a_fine_category_from_free_text_in_an_item_table(tmp_path):
    """An item table with 3,000 items: a product type of 1,500 values, each shared by two items,
    is a category (past the 1,000-value cap for event columns); a title per item is text."""
    rng = random.Random(10)
    items = pd.DataFrame(
        {
            "sku": [f"s{i}" for i in range(3000)],
            "product_type": [f"type {i // 2}" for i in range(3000)],
            "title": [f"item {i} {rng.random():.6f}" for i in range(3000)],
        }
    )
    items.to_csv(tmp_path / "items.csv", index=False)
    events = _random_log(tmp_path / "events.csv", rng, ["customer_id", "sku", "ts"], 50, list(items["sku"]), 600, 1)
    dataset, _ = write_starter([events], None, str(tmp_path / "items.csv"), tmp_path / "c")
    (table,) = load_dataset_config(dataset).items
    assert table.columns == {"product_type": "categorical", "title": "text"}


def test_starter_reads_several_categories_in_one_cell_as_a_list(tmp_path):
    """Genres "Comedy|Drama" are a list (each genre a graph node and a label), not one category
    per combination; names split at commas, prices with a decimal comma and a category that
    holds a separator now and then are not."""
    rng = random.Random(11)
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "War"]
    first, last = [f"F{i}" for i in range(300)], [f"L{i}" for i in range(900)]
    items = pd.DataFrame(
        {
            "movie": [f"m{i}" for i in range(1000)],
            "genres": ["|".join(rng.sample(genres, rng.randint(1, 3))) for _ in range(1000)],
            "director": [f"{rng.choice(last)}, {rng.choice(first)}" for _ in range(1000)],
            "price_text": [f"{rng.randint(1, 30)},{rng.choice([49, 99])}" for _ in range(1000)],
            "studio": [rng.choice(["North", "South", "East|West"]) if i % 10 == 0 else "Big" for i in range(1000)],
        }
    )
    items.to_csv(tmp_path / "movies.csv", index=False)
    events = _random_log(tmp_path / "views.csv", rng, ["user", "movie", "ts"], 60, list(items["movie"]), 2000, 3)
    dataset, tasks = write_starter([events], None, str(tmp_path / "movies.csv"), tmp_path / "c")
    cfg = load_dataset_config(dataset)
    (table,) = cfg.items
    assert table.list_separator == "|"
    assert table.columns == {
        "genres": "list",
        "director": "text",
        "price_text": "categorical",
        "studio": "categorical",
    }
    assert "genres" in cfg.representation.graph.columns and cfg.list_columns() == ["genres"]
    propensity = next(t for t in load_modeling_config(tasks).tasks if t.type == "multilabel")
    assert propensity.target.column == "genres"


def test_starter_reads_json_arrays_of_categories_as_a_list(tmp_path):
    """A JSON-lines catalogue: category paths as arrays (an element may hold a comma) are a list;
    arrays of values that hardly repeat (related product ids) are text."""
    rng = random.Random(12)
    paths = [["Clothing, Shoes & Jewelry", "Women"], ["Clothing, Shoes & Jewelry", "Men"], ["Books"], ["Toys", "Dolls"]]
    with open(tmp_path / "meta.jsonl", "w") as fh:
        for i in range(800):
            also = [f"p{rng.randint(0, 10**6)}" for _ in range(3)]
            fh.write(json.dumps({"asin": f"p{i}", "category": rng.choice(paths), "also_buy": also}) + "\n")
    asins = [f"p{i}" for i in range(800)]
    events = _random_log(tmp_path / "reviews.csv", rng, ["reviewer", "asin", "ts"], 60, asins, 2000, 3)
    dataset, _ = write_starter([events], None, str(tmp_path / "meta.jsonl"), tmp_path / "c")
    (table,) = load_dataset_config(dataset).items
    assert table.columns == {"category": "list", "also_buy": "text"}


def test_init_sorts_a_folder_of_exports_into_events_and_attribute_tables(tmp_path, capsys):
    """`init --events data/*` with an H&M-like folder: transactions (client, time, article),
    customers (one row per client, no time) and articles (one row per article): the two tables
    become the client and item tables, as --clients and --items would have made them; a README
    and a table of codes are left out, each with its reason."""
    rng = random.Random(11)
    data = tmp_path / "data"
    data.mkdir()
    customers = [f"{i:06d}" for i in range(60)]
    pd.DataFrame(
        {"customer_id": customers, "club_member_status": [rng.choice(["ACTIVE", "PRE-CREATE"]) for _ in customers]}
    ).to_csv(data / "customers.csv", index=False)
    articles = [f"0{108775000 + i}" for i in range(40)]
    pd.DataFrame(
        {"article_id": articles, "product_group_name": [rng.choice(["Garment Upper body", "Shoes"]) for _ in articles]}
    ).to_csv(data / "articles.csv", index=False)
    rows = [
        (f"{dt.date(2020, 1, 1) + dt.timedelta(days=i % 80)}", rng.choice(customers), rng.choice(articles), 0.05)
        for i in range(900)
    ]
    pd.DataFrame(rows, columns=["t_dat", "customer_id", "article_id", "price"]).to_csv(
        data / "transactions_train.csv", index=False
    )
    (data / "README.md").write_text("# sku, customer_id\n")
    (data / "old").mkdir()
    pd.DataFrame({"code": ["a", "b"], "label": ["x", "y"]}).to_csv(data / "codes.csv", index=False)
    files = sorted(str(p) for p in data.glob("*"))  # what the shell makes of data/*
    assert main(["init", "--events", *files, "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out  # what was left out, and why
    assert "Left out: README.md: a folder or no data file ending" in out
    assert "Left out: old: a folder or no data file ending" in out
    assert "Left out: codes.csv (no client id, no file of orders to take one from, not keyed by an item id)" in out
    cfg = load_dataset_config(tmp_path / "c" / "dataset.yaml")
    assert (tmp_path / "c" / "dataset.yaml").read_text().count("given with the events, read as a table") == 2
    assert [s.name for s in cfg.events] == ["transactions_train"]
    assert [(t.name, t.key, t.columns) for t in cfg.clients] == [
        ("customers", "customer_id", {"club_member_status": "categorical"})
    ]
    assert [(t.name, t.key, t.columns) for t in cfg.items] == [
        ("articles", "article_id", {"product_group_name": "categorical"})
    ]


def test_starter_joins_order_lines_to_their_orders(tmp_path):
    """Olist-like order lines (no client, no purchase time) and orders (one row per order_id,
    the customer and the purchase time): the orders join the lines, the purchase time wins over
    the lines' shipping deadline, and the price, not the freight, is the value."""
    rng = random.Random(9)
    orders, lines = [], []
    for o in range(150):
        at = dt.datetime(2017, 3, 1) + dt.timedelta(hours=o * 7)
        orders.append((f"o{o:04d}", f"cust{rng.randint(1, 40):03d}", "delivered", f"{at:%Y-%m-%d %H:%M:%S}"))
        for i in range(1, rng.randint(2, 4)):
            limit = at + dt.timedelta(days=3)
            lines.append(
                (f"o{o:04d}", i, f"p{rng.randint(1, 30)}", f"{limit:%Y-%m-%d %H:%M:%S}", 19.9, rng.randint(1, 9))
            )
    cols = ["order_id", "customer_id", "order_status", "order_purchase_timestamp"]
    pd.DataFrame(orders, columns=cols).to_csv(tmp_path / "orders.csv", index=False)
    cols = ["order_id", "order_item_id", "product_id", "shipping_limit_date", "price", "freight_value"]
    pd.DataFrame(lines, columns=cols).to_csv(tmp_path / "order_items.csv", index=False)
    paths = [str(tmp_path / "order_items.csv"), str(tmp_path / "orders.csv")]
    dataset, _ = write_starter(paths, None, None, tmp_path / "c")
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events  # the orders file is joined, not a source of its own
    assert [(j.path, j.key) for j in src.join] == [(str(tmp_path / "orders.csv"), "order_id")]
    assert (src.client_id, src.item_id, src.basket_id, src.value) == ("customer_id", "product_id", "order_id", "price")
    assert src.timestamp == TimestampSpec(column="order_purchase_timestamp")
    assert src.context_kinds() == {"freight_value": "numeric"}
    assert (cfg.data_start, cfg.data_end) == (dt.date(2017, 3, 1), dt.date(2017, 4, 13))  # shipping ends 04-16
    assert "events at one time only" not in dataset.read_text()
    # a customer id per order (every client seen once) is named in a warning
    pd.DataFrame(
        [(*o[:1], f"c{o[0]}", *o[2:]) for o in orders], columns=[c for c in pd.read_csv(paths[1]).columns]
    ).to_csv(paths[1], index=False)
    dataset, _ = write_starter(paths, None, None, tmp_path / "d")
    assert "100% of the sampled clients have events at one time only" in dataset.read_text()


def test_starter_reads_json_lines(tmp_path):
    """An Amazon-reviews-like dump: JSON lines, reviewer and asin ids, Unix seconds."""
    rng = random.Random(6)
    start = dt.datetime(2014, 5, 1, tzinfo=dt.UTC).timestamp()
    lines = [
        json.dumps(
            {
                "reviewerID": f"A{rng.randint(1, 40)}",
                "asin": f"B{rng.randint(1, 30):04d}",
                "overall": float(rng.randint(1, 5)),
                "unixReviewTime": round(start + i * 8_640),
                "style": {"Format:": rng.choice([" Kindle", " Paperback"])},
            }
        )
        for i in range(400)
    ]
    (tmp_path / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    dataset, tasks = write_starter([str(tmp_path / "reviews.jsonl")], None, None, tmp_path / "c")
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert (src.format, src.client_id, src.item_id) == ("json", "reviewerID", "asin")
    assert src.timestamp == TimestampSpec(column="unixReviewTime", unit="s")
    assert src.context_kinds() == {"overall": "numeric", "style": "categorical"}
    assert "format:" not in dataset.read_text()  # the ending says it
    assert [t.name for t in load_modeling_config(tasks).tasks] == ["churn", "next_purchases"]


def _clickstream(path, time_column: str = "timestamp", scale: float = 1_000):
    """A RetailRocket-like log: Unix-time column (ms by default), visitor, event type, item."""
    rng = random.Random(2)
    start = dt.datetime(2015, 5, 3, tzinfo=dt.UTC).timestamp()
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([time_column, "visitorid", "event", "itemid"])
        for _ in range(500):
            t = start + rng.uniform(0, 60 * 86_400)
            out.writerow([round(t * scale), rng.randint(1, 40), rng.choice(["view", "addtocart"]), rng.randint(1, 30)])
    return path


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 1_000), ("us", 1_000_000)])
def test_starter_reads_unix_time(tmp_path, unit, scale):
    dataset, _ = write_starter([str(_clickstream(tmp_path / "events.csv", scale=scale))], None, None, tmp_path / "c")
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert src.timestamp == TimestampSpec(column="timestamp", unit=unit)
    assert (src.client_id, src.item_id, src.event_type) == ("visitorid", "itemid", "event")
    assert (cfg.data_start, cfg.data_end) == (dt.date(2015, 5, 3), dt.date(2015, 7, 1))
    assert f"read as Unix {unit}" in dataset.read_text()
    # no two clicks share a time: grouping by timestamp would make each its own basket
    assert cfg.baskets == "day" and "`timestamp` would make each event its own basket" in dataset.read_text()


def test_starter_groups_receipt_lines_without_an_invoice_by_their_time(tmp_path):
    """Lines of one receipt share its time, so `timestamp` is the basket; a click log whose
    transaction id is filled on purchases only groups its other events by day."""
    lines = pd.read_csv(_invoice_lines(tmp_path / "lines.csv"), dtype=str).drop(columns="InvoiceNo")
    lines.to_csv(tmp_path / "receipts.csv", index=False)
    cfg = load_dataset_config(write_starter([str(tmp_path / "receipts.csv")], None, None, tmp_path / "r")[0])
    assert cfg.events[0].basket_id is None and cfg.baskets == "timestamp"
    clicks = pd.read_csv(_clickstream(tmp_path / "clicks.csv"))
    clicks["transactionid"] = [f"t{i}" if i % 7 == 0 else "" for i in range(len(clicks))]
    clicks.to_csv(tmp_path / "clicks.csv", index=False)
    cfg = load_dataset_config(write_starter([str(tmp_path / "clicks.csv")], None, None, tmp_path / "c")[0])
    assert cfg.events[0].basket_id == "transactionid" and cfg.baskets == "day"


def test_starter_does_not_take_small_numbers_for_unix_time(tmp_path):
    """Seconds since the start of a session are numbers in a time-named column, not dates."""
    events = _clickstream(tmp_path / "events.csv", time_column="time_offset", scale=1e-6)
    with pytest.raises(StarterError, match="no date/time column found.*Unix time in s/ms/us between 1990 and 2100"):
        write_starter([str(events)], None, None, tmp_path / "c")


def test_starter_says_how_to_read_a_file_without_header(tmp_path):
    events = _clickstream(tmp_path / "events.csv")
    lines = events.read_text().splitlines()[1:]  # the same log, exported without its header line
    events.write_text("\n".join(lines) + "\n")
    with pytest.raises(StarterError, match=r"no column looks like a client id.*csv: \{header: false, columns"):
        write_starter([str(events)], None, None, tmp_path / "c")


def test_starter_quotes_odd_names_and_reads_attribute_files(tmp_path):
    rng = random.Random(2)
    start = dt.datetime(2023, 1, 1)
    buyers = [f"u{rng.randint(1, 40)}" for _ in range(200)]  # one client per order
    pd.DataFrame(
        {
            "User Id": [buyers[i // 3] for i in range(600)],
            "product_id": [f"p{rng.randint(1, 30)}" for _ in range(600)],
            "order": [f"o{i // 3}" for i in range(600)],
            "Event Time": [(start + dt.timedelta(hours=7 * i)).isoformat(sep=" ") for i in range(600)],
            "Qty": [rng.randint(-1, 3) for _ in range(600)],
            "Unit Price": [rng.uniform(1, 9) for _ in range(600)],
        }
    ).to_parquet(tmp_path / "log.parquet")
    pd.DataFrame({"product_id": [f"p{i}" for i in range(1, 31)], "Category": [f"c{i % 5}" for i in range(30)]}).to_csv(
        tmp_path / "products.csv", index=False
    )
    pd.DataFrame({"user_id": [f"u{i}" for i in range(1, 41)], "age": range(40)}).to_csv(
        tmp_path / "users.tsv", sep="\t", index=False
    )
    dataset, tasks = write_starter(
        [str(tmp_path / "log.parquet")], str(tmp_path / "users.tsv"), str(tmp_path / "products.csv"), tmp_path, "shop"
    )
    cfg = load_dataset_config(dataset)
    (src,) = cfg.events
    assert (cfg.name, src.client_id, src.basket_id) == ("shop", "User Id", "order")
    assert src.timestamp == TimestampSpec(column="Event Time")  # ISO text: no format
    assert src.value == Derived(expr='Qty * "Unit Price"')
    assert (cfg.clients[0].key, cfg.clients[0].format, cfg.clients[0].columns) == ("user_id", "csv", {"age": "numeric"})
    assert (cfg.items[0].key, cfg.items[0].columns) == ("product_id", {"Category": "categorical"})
    assert "abs(Qty)" in dataset.read_text()  # negative quantities are pointed out
    mcfg = load_modeling_config(tasks)
    assert mcfg.task("category_propensity").target.column == "Category"
    assert mcfg.task("category_propensity").target.top_n == 10


def test_init_cli_refuses_to_overwrite(tmp_path, capsys):
    events = str(_purchase_log(tmp_path / "purchases.csv"))
    assert main(["init", "--events", events]) == 0
    out = capsys.readouterr().out
    assert f"BM_DATASET={tmp_path / 'dataset.yaml'} bm-assets validate" in out and "bm-assets run" in out
    assert main(["init", "--events", events]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["init", "--events", events, "--force", "--name", "cdnow"]) == 0
    assert load_dataset_config(tmp_path / "dataset.yaml").name == "cdnow"
