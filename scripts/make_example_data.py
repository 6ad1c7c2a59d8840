"""Write the two small synthetic example datasets bundled in data/ (seeded, deterministic):

- data/invoices_example/invoices.csv: invoice lines shaped like an online retailer's export
  (InvoiceNo with 'C' cancellations and negative quantities, StockCode, Description, Quantity,
  InvoiceDate as '12/1/2010 8:26', UnitPrice, CustomerID with blanks, Country per line).
- data/purchases_example/purchases.csv: a purchase log without items (customer, date as
  19970101, number of items, amount), the classic customer-base-analysis shape.

Behaviour is generated to be learnable: per-customer purchase rates, some customers dropping
out (churn), favourite product families and repeat purchases of favourite products."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent.parent / "data"
WORDS = ["WHITE", "RED", "HEART", "LANTERN", "MUG", "BAG", "CANDLE", "TEA", "SET", "BOX", "VINTAGE", "GLASS"]
FAMILIES = ["DECO", "KITCHEN", "PARTY", "GARDEN", "TOYS", "BAGS", "LIGHTS", "STATIONERY"]


def invoices(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_products, n_customers, days = 300, 250, 210
    start = dt.datetime(2010, 12, 1)
    family = rng.integers(0, len(FAMILIES), n_products)
    codes = [f"{20000 + 37 * i}" + ("A" if i % 11 == 0 else "") for i in range(n_products)]
    names = [f"{FAMILIES[family[i]]} {' '.join(rng.choice(WORDS, 2, replace=False))}" for i in range(n_products)]
    price = np.round(rng.gamma(2.0, 1.6, n_products) + 0.3, 2)
    popularity = rng.pareto(1.2, n_products) + 0.1
    countries = np.where(
        rng.random(n_customers) < 0.8, "United Kingdom", rng.choice(["France", "Germany", "EIRE", "Spain"], n_customers)
    )
    rows, invoice = [], 536365
    for c in range(n_customers):
        rate = rng.gamma(1.5, 0.05)  # invoices per day
        first = rng.integers(0, 60)
        life = days if rng.random() < 0.6 else rng.integers(30, days)  # some customers drop out
        fav = rng.choice(len(FAMILIES), 2, replace=False)
        in_fav = np.isin(family, fav)
        weights = popularity * np.where(in_fav, 6.0, 1.0)
        weights /= weights.sum()
        favourites = rng.choice(n_products, 8, replace=False, p=weights)
        t = float(first)
        while t < min(days, first + life):
            when = start + dt.timedelta(days=int(t), hours=int(rng.integers(8, 18)), minutes=int(rng.integers(0, 60)))
            n_lines = int(rng.integers(1, 8))
            repeat = rng.random(n_lines) < 0.5
            picks = np.where(repeat, rng.choice(favourites, n_lines), rng.choice(n_products, n_lines, p=weights))
            customer = "" if rng.random() < 0.12 else str(12346 + c)
            for p in dict.fromkeys(picks.tolist()):
                qty = int(rng.choice([1, 2, 3, 4, 6, 12]))
                rows.append([str(invoice), codes[p], names[p], qty, when, price[p], customer, countries[c]])
            if rng.random() < 0.04:  # a cancellation of the invoice's first line
                p = int(picks[0])
                rows.append(
                    [
                        f"C{invoice + 1}",
                        codes[p],
                        names[p],
                        -1,
                        when + dt.timedelta(hours=1),
                        price[p],
                        customer,
                        countries[c],
                    ]
                )
                invoice += 1
            invoice += 1
            t += max(1.0, rng.exponential(1.0 / rate))
    df = pd.DataFrame(
        rows,
        columns=[
            "InvoiceNo",
            "StockCode",
            "Description",
            "Quantity",
            "InvoiceDate",
            "UnitPrice",
            "CustomerID",
            "Country",
        ],
    ).sort_values(["InvoiceDate", "InvoiceNo"], kind="stable")
    df["InvoiceDate"] = [f"{d.month}/{d.day}/{d.year} {d.hour}:{d.minute:02d}" for d in df["InvoiceDate"]]
    df["Quantity"] = df["Quantity"].astype(str)
    df.iloc[100, df.columns.get_loc("Quantity")] = "twelve"  # deliberately malformed rows
    df.iloc[200, df.columns.get_loc("InvoiceDate")] = "31/31/2010 25:61"
    return df


def purchases(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start, days, rows = dt.date(1997, 1, 1), 365, []
    for c in range(1, 301):
        rate = rng.gamma(1.2, 0.02)  # purchases per day while alive (Pareto/NBD-like heterogeneity)
        death = rng.exponential(1 / rng.gamma(1.0, 0.004))  # lifetime in days
        spend = rng.gamma(3.0, 12.0)
        t = float(rng.integers(0, 90))
        first = t
        while t < days and t - first <= death:
            n = int(rng.integers(1, 5))
            rows.append(
                [
                    c,
                    int((start + dt.timedelta(days=int(t))).strftime("%Y%m%d")),
                    n,
                    round(float(n * spend * rng.uniform(0.6, 1.4)), 2),
                ]
            )
            t += max(1.0, rng.exponential(1.0 / rate))
    return pd.DataFrame(rows, columns=["customer_id", "date", "n_items", "amount"]).sort_values(["date", "customer_id"])


def main() -> None:
    for name, frame, file in (
        ("invoices_example", invoices(), "invoices.csv"),
        ("purchases_example", purchases(), "purchases.csv"),
    ):
        folder = DATA / name
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / file, index=False)
        print(f"{folder / file}: {len(frame)} rows")


if __name__ == "__main__":
    main()
