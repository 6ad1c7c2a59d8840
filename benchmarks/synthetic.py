"""Synthetic event logs whose shape follows The Complete Journey: events per client
(log-normal), item popularity (Zipf), hour of day and day of week (histograms), all fitted on
the real transactions when they are available (`--fit`), else read from synthetic_fit.json.

Events are drawn independently given the client, the item and the time (no basket structure):
enough for throughput and memory benchmarks, not for model quality.

    python benchmarks/synthetic.py --fit /work/shared/data/completejourney/transactions.parquet
    python benchmarks/synthetic.py --events 10000000 --clients 1000000 --items 100000 --out log.parquet
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np

FIT_FILE = Path(__file__).with_name("synthetic_fit.json")


@dataclass
class Fit:
    """Distribution parameters measured on a real log."""

    events_per_client_log_mean: float
    events_per_client_log_std: float
    zipf_exponent: float
    hour_share: list[float]  # 24 shares
    weekday_share: list[float]  # 7 shares, Monday first
    value_log_mean: float
    value_log_std: float


def fit(transactions: str) -> Fit:
    """Fit the distributions on a Complete Journey transactions file (Parquet)."""
    con = duckdb.connect()
    src = f"read_parquet('{transactions}')"
    per_client = con.execute(f"SELECT count(*) FROM {src} GROUP BY household_id").fetchnumpy()
    counts = np.log(next(iter(per_client.values())).astype(np.float64))
    pop = con.execute(f"SELECT count(*) AS n FROM {src} GROUP BY product_id ORDER BY n DESC").fetchnumpy()["n"]
    ranks = np.arange(1, len(pop) + 1)
    top = ranks <= min(len(pop), 20_000)  # the head, where a power law describes popularity
    slope = np.polyfit(np.log(ranks[top]), np.log(pop[top].astype(np.float64)), 1)[0]
    hours = con.execute(
        f"SELECT hour(transaction_timestamp) AS h, count(*) AS n FROM {src} GROUP BY 1 ORDER BY 1"
    ).fetchnumpy()
    hour_share = np.zeros(24)
    hour_share[hours["h"]] = hours["n"]
    days = con.execute(
        f"SELECT isodow(transaction_timestamp) - 1 AS d, count(*) AS n FROM {src} GROUP BY 1 ORDER BY 1"
    ).fetchnumpy()
    weekday_share = np.zeros(7)
    weekday_share[days["d"]] = days["n"]
    values = con.execute(f"SELECT ln(sales_value) AS v FROM {src} WHERE sales_value > 0").fetchnumpy()["v"]
    return Fit(
        events_per_client_log_mean=float(counts.mean()),
        events_per_client_log_std=float(counts.std()),
        zipf_exponent=float(-slope),
        hour_share=(hour_share / hour_share.sum()).round(6).tolist(),
        weekday_share=(weekday_share / weekday_share.sum()).round(6).tolist(),
        value_log_mean=float(values.mean()),
        value_log_std=float(values.std()),
    )


def load_fit() -> Fit:
    return Fit(**json.loads(FIT_FILE.read_text(encoding="utf-8")))


def generate(
    n_events: int, n_clients: int, n_items: int, n_days: int = 365, seed: int = 0, params: Fit | None = None
) -> dict[str, np.ndarray]:
    """Columns of a synthetic log sorted by time: client int32, item int32, day int32 (0-based),
    second_of_day int32, value float32. Client activity and item popularity follow the fit;
    ids are shuffled so neither correlates with the id order."""
    p = params or load_fit()
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(p.events_per_client_log_mean, p.events_per_client_log_std, n_clients)
    client_cdf = np.cumsum(activity / activity.sum())
    item_p = np.arange(1, n_items + 1, dtype=np.float64) ** -p.zipf_exponent
    item_cdf = np.cumsum(item_p / item_p.sum())
    client = rng.permutation(n_clients)[np.minimum(np.searchsorted(client_cdf, rng.random(n_events)), n_clients - 1)]
    item = rng.permutation(n_items)[np.minimum(np.searchsorted(item_cdf, rng.random(n_events)), n_items - 1)]
    weekday = np.asarray(p.weekday_share)
    day_p = weekday[(np.arange(n_days) + 6) % 7]  # day 0 = 2017-01-01, a Sunday
    day = rng.choice(n_days, size=n_events, p=day_p / day_p.sum())
    hour = rng.choice(24, size=n_events, p=np.asarray(p.hour_share) / np.sum(p.hour_share))
    second = hour * 3600 + rng.integers(0, 3600, n_events)
    value = rng.lognormal(p.value_log_mean, p.value_log_std, n_events)
    order = np.lexsort((second, day))
    return {
        "client": client[order].astype(np.int32),
        "item": item[order].astype(np.int32),
        "day": day[order].astype(np.int32),
        "second_of_day": second[order].astype(np.int32),
        "value": value[order].astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", help="transactions.parquet to fit on; writes synthetic_fit.json")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the log as Parquet here")
    args = parser.parse_args()
    if args.fit:
        params = fit(args.fit)
        FIT_FILE.write_text(json.dumps(asdict(params), indent=2) + "\n", encoding="utf-8")
        print(json.dumps(asdict(params), indent=2))
    if args.out:
        log = generate(args.events, args.clients, args.items, seed=args.seed)
        con = duckdb.connect()
        con.register("log", log)
        con.execute(f"COPY (SELECT * FROM log) TO '{args.out}' (FORMAT parquet)")
        print(f"wrote {args.events} events to {args.out}")


if __name__ == "__main__":
    main()
