"""Builders of small, hand-written datasets for tests: CSV event files plus their YAML."""

from __future__ import annotations

from pathlib import Path

import yaml

HEADER = "event_id,client,item,ts,qty,amount,shop\n"


def write_dataset(
    folder: Path,
    events_csv: bytes | str,
    *,
    event_id: bool = True,
    items_csv: str = "sku,brand\nA,b1\nB,b2\nC,b1\n",
    clients_csv: str = "cid,segment\n1,x\n2,y\n",
    data_start: str = "2024-01-01",
    data_end: str = "2024-01-31",
    timestamp_format: str | None = "%Y-%m-%d %H:%M:%S",
) -> Path:
    """Write events.csv, items.csv, clients.csv and dataset.yaml into `folder`; return the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    data = events_csv.encode() if isinstance(events_csv, str) else events_csv
    (folder / "events.csv").write_bytes(data)
    (folder / "items.csv").write_text(items_csv)
    (folder / "clients.csv").write_text(clients_csv)
    source = {
        "name": "purchase",
        "path": "events.csv",
        "client_id": "client",
        "item_id": "item",
        "timestamp": {"column": "ts", **({"format": timestamp_format} if timestamp_format else {})},
        "quantity": "qty",
        "value": "amount",
        "context": {"shop": "categorical"},
    }
    if event_id:
        source["event_id"] = "event_id"
    cfg = {
        "name": "test",
        "data_start": data_start,
        "data_end": data_end,
        "temporal": {"training_cutoff": "2024-01-20", "test_start": "2024-01-25", "test_end": "2024-02-01"},
        "events": [source],
        "clients": [
            {"name": "clients", "path": "clients.csv", "key": "cid", "columns": {"segment": "categorical"}}
        ],
        "items": [{"name": "items", "path": "items.csv", "key": "sku", "columns": {"brand": "categorical"}}],
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
