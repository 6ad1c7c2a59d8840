"""Explanations: why a client got a score, in the catalogue's and the business's own words.

A task network scores a profile vector (decayed EMDE sketches over hashed buckets, then dense
counters). Integrated Gradients (Sundararajan et al. 2017, via captum) attribute the score to
each profile dimension along the straight path from the EMPTY profile (a client without
history) to the client's own; the attributions sum to score minus the empty profile's score
(completeness). From the empty profile, a bucket the client never touched gets exactly zero, so
every sketch attribution can be folded back to the client's own entities: a bucket's attribution
is shared among the client's entities that fall in it, in proportion to their (decayed) share
of the bucket's value, which is exactly how they built that input. Entities of the item column
carry their item attributes (brand, category...), so item reasons also roll up to those.

LightGBM's own SHAP values (`pred_contrib`) explain the aggregate baseline by feature name.

Everything here reads events dated on or before each explained as-of date only."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from bm_assets.config import DatasetConfig
from bm_assets.core.evaluation import TaskData
from bm_assets.core.foundation import BehavioralNet
from bm_assets.core.kinds import EXPLAINABLE, KINDS, Boosters, kind_of, shap_values
from bm_assets.core.profiles import ProfileLayout
from bm_assets.core.sketches import SketchCoder
from bm_assets.core.sql import EVENTS_DENORMALIZED, ident, literal
from bm_assets.core.warehouse import Warehouse

#: Points on the integration path (Gauss-Legendre). Rows whose completeness gap exceeds
#: GAP_TOLERANCE are integrated again with 4x the points.
IG_STEPS = 64
#: Largest accepted |sum of attributions - score change|, relative to max(|change|, 0.01).
GAP_TOLERANCE = 1e-3


@dataclass
class Attributions:
    """Per explained row: the output, the empty profile's output, one attribution per profile
    dimension (float64[n, d]) and the completeness gap (sum of attributions minus the change)."""

    output: np.ndarray
    baseline_output: np.ndarray
    attr: np.ndarray
    delta: np.ndarray


def reference_baseline(x_reference: np.ndarray, layout: ProfileLayout) -> np.ndarray:
    """float64[d]: the baseline profile: no sketch mass (so every sketch attribution folds back
    to the client's own entities) and the median client's counters (activity, spend, recency),
    so a counter is credited only for how far the client is from a typical client."""
    x_reference = np.asarray(x_reference, dtype=np.float64)
    base = np.median(x_reference, axis=0) if len(x_reference) else np.zeros(layout.profile_dim)
    for name, start, stop in layout.blocks():
        if name.startswith("sketch/"):
            base[start:stop] = 0.0
    return base


def integrated_gradients(
    net: BehavioralNet,
    x: np.ndarray,
    kind: str,
    target: np.ndarray | int | None = None,
    steps: int = IG_STEPS,
    batch_size: int = 1024,
    baseline: np.ndarray | None = None,
) -> Attributions:
    """Attributions of the task output to every profile dimension, from `baseline` (default
    the empty profile). `target`: the output column (label or class) per row, or one for all
    rows; None for binary and regression. Rows that miss completeness by more than
    GAP_TOLERANCE are integrated again with 4x the steps."""
    if kind not in EXPLAINABLE:
        raise ValueError(f"explanations cover task types {EXPLAINABLE}; not {kind!r}")
    first = _integrated_gradients(net, x, kind, target, steps, batch_size, baseline)
    change = np.maximum(np.abs(first.output - first.baseline_output), 0.01)
    redo = np.flatnonzero(np.abs(first.delta) > GAP_TOLERANCE * change)
    if len(redo):
        t = None if target is None else np.broadcast_to(np.asarray(target), (len(x),))[redo]
        # 4x the points on a quarter of the rows per batch: the same memory as the first pass
        again = _integrated_gradients(net, x[redo], kind, t, steps * 4, max(1, batch_size // 4), baseline)
        first.attr[redo], first.delta[redo] = again.attr, again.delta
    return first


def _integrated_gradients(
    net: BehavioralNet, x: np.ndarray, kind: str, target, steps: int, batch_size: int, baseline: np.ndarray | None
) -> Attributions:
    """Integrated Gradients along the straight path in the network's own input space, the
    compressed profile z = sign(x) log(1 + |x|) (per dimension a monotone map, so attributions
    stay per profile dimension, and the integrand is smooth enough for few steps).

    The network's first layer is affine in z (standardise, then Linear), so the path maps to a
    straight path h(a) = h0 + a dh in the first hidden layer, and the gradient with respect to
    z is that with respect to h times the layer's weights (the wide path is one more affine map
    of z, stacked under the first layer). captum integrates the (small) rest of
    the network over h without multiplying by the input change; the integral is then carried
    back through the weights once per row: attr = dz * (W / std)^T G. Exactly Integrated
    Gradients on z, at a fraction of the cost of differentiating the wide first layer per step.
    A regression's amount path (linear in the raw dense inputs, under an affine head) is a
    separate sum over inputs: its exact share per input is added to the integral's. A dense
    encoding (piecewise linear in the dense entries, added to the first layer) is not affine: the
    standardised dense entries d are integrated as a second input beside h (the straight path in z
    is straight in d too), and their gradient is carried back to z through 1 / std. The gradient
    jumps where an entry crosses a piece's edge, which slows the quadrature: such networks sum to
    the score change within about 1 % rather than GAP_TOLERANCE (the gap is reported)."""
    from captum.attr import IntegratedGradients

    net = net.cpu().eval()
    head = KINDS[kind].head
    first, rest = net.encoder[0], net.encoder[1:]
    n = len(x)
    targets = None if target is None else np.broadcast_to(np.asarray(target), (n,)).astype(np.int64)
    attr = np.zeros(x.shape, dtype=np.float64)
    delta, output, base = np.zeros(n), np.zeros(n), np.zeros(n)
    with _double(net):
        # h = W ((z - mean) / std) + b = W' z + b'; the wide path's logits u, affine in z too,
        # ride along as extra entries of h: the path stays straight and one carry-back covers both
        affine = [first] + ([net.wide] if net.wide is not None else [])
        w = torch.cat([layer.weight for layer in affine]) / net.x_std[None, :]  # [hidden (+ n_out), n_in]
        b = torch.cat([layer.bias for layer in affine]) - w @ net.x_mean
        x0 = np.zeros(x.shape[1]) if baseline is None else np.asarray(baseline, dtype=np.float64)
        z0 = BehavioralNet.compress(torch.from_numpy(x0).double())
        h0 = w @ z0 + b
        hidden = first.out_features
        enc = net.dense_encoding
        dense = slice(0, 0) if enc is None else slice(enc.start, enc.stop)

        def standardised_dense(z: torch.Tensor) -> torch.Tensor:
            return (z[..., dense] - net.x_mean[dense]) / net.x_std[dense]

        def from_hidden(h: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
            pre = h[:, :hidden] if d is None else h[:, :hidden] + enc.linear(enc.pieces(d))
            out = net.task_head(rest(pre))
            return head(net, out + h[:, hidden:] if net.wide is not None else out)

        d0 = standardised_dense(z0)
        ig = IntegratedGradients(from_hidden, multiply_by_inputs=False)
        for i in range(0, n, batch_size):
            zb = BehavioralNet.compress(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).double())
            dz = zb - z0
            hb, db = h0 + dz @ w.T, standardised_dense(zb)
            h0b, d0b = h0.expand_as(hb).contiguous(), d0.expand_as(db).contiguous()
            tb = None if targets is None else targets[i : i + batch_size].tolist()
            inputs, baselines = ((hb,), (h0b,)) if enc is None else ((hb, db), (h0b, d0b))
            grads = ig.attribute(inputs, baselines=baselines, target=tb, n_steps=steps, method="gausslegendre")
            grad_z = grads[0] @ w
            if enc is not None:
                grad_z[:, dense] += grads[1] / net.x_std[dense]
            a = dz * grad_z
            with torch.no_grad():
                yo, yb = from_hidden(*inputs), from_hidden(*baselines)
            if tb is not None:
                idx = torch.tensor(tb)[:, None]
                yo, yb = yo.gather(1, idx)[:, 0], yb.gather(1, idx)[:, 0]
            sl = slice(i, i + len(zb))
            attr[sl] = a.detach().numpy()
            output[sl], base[sl] = yo.numpy(), yb.numpy()
            if net.amount is not None:  # regression (affine head): each dense input's exact share
                amount = net.amount
                xb0 = torch.from_numpy(np.broadcast_to(x0, (len(zb), len(x0))).copy())
                xb = torch.from_numpy(np.ascontiguousarray(x[sl], dtype=np.float64))
                with torch.no_grad():
                    share = (amount.inputs(xb) - amount.inputs(xb0)) * amount.linear.weight[0] * net.y_std[0]
                    attr[sl, amount.start : amount.stop] += share.numpy()
                    output[sl] += (amount(xb)[:, 0] * net.y_std[0]).numpy()
                    base[sl] += (amount(xb0)[:, 0] * net.y_std[0]).numpy()
            delta[sl] = attr[sl].sum(1) - (output[sl] - base[sl])
    return Attributions(output, base, attr, delta)


class _double:
    """The network in float64 for the duration (restored after): integration errors stay far
    below the attributions users read."""

    def __init__(self, net: BehavioralNet):
        self.net = net

    def __enter__(self):
        self.net.double()

    def __exit__(self, *exc):
        self.net.float()


# --- the client's own entities ----------------------------------------------------------------


def item_rollups(cfg: DatasetConfig, coders: dict[str, SketchCoder]) -> dict[str, list[str]]:
    """{sketched item column: its item attributes}: the representation's inductive attributes
    (brand, category...), so item reasons can be read and summed by them."""
    inductive = cfg.representation.inductive
    if inductive is None or inductive.column not in coders:
        return {}
    available = cfg.event_columns()
    return {inductive.column: [a for a in inductive.attributes or [] if a in available]}


def entity_history(
    wh: Warehouse,
    columns: list[str],
    rollups: dict[str, list[str]],
    examples: pd.DataFrame,
    half_lives_days: tuple[float, ...],
) -> dict[str, pd.DataFrame]:
    """Per sketch column: (row, entity, w0..wk[, rollup attributes]) with `row` the index of
    the example (client_id, as_of) and w_k the decayed count of the client's events with that
    entity as of the END of as_of (the profile's own weights: 0.5 ** ((as_of - day) / h_k)).
    Only events dated <= as_of are read. `rollups[column]`: attribute columns to carry (an
    item's brand, category...)."""
    if examples.empty:
        return {c: pd.DataFrame(columns=["row", "entity"]) for c in columns}
    pairs = ", ".join(
        f"({i}, {literal(str(c))}, DATE '{d.isoformat()}')"
        for i, (c, d) in enumerate(zip(examples["client_id"], examples["as_of"], strict=True))
    )
    weights = ", ".join(
        f"sum(pow(0.5, date_diff('day', e.event_date, x.as_of) / {float(h)!r})) AS w{k}"
        for k, h in enumerate(half_lives_days)
    )
    out: dict[str, pd.DataFrame] = {}
    for column in columns:
        extra = "".join(f", any_value(CAST(e.{ident(a)} AS VARCHAR)) AS {ident(a)}" for a in rollups.get(column, []))
        out[column] = wh.fetch_df(
            f"""WITH x AS (SELECT * FROM (VALUES {pairs}) AS v(row_id, client_id, as_of))
            SELECT x.row_id, CAST(e.{ident(column)} AS VARCHAR) AS entity, {weights}{extra}
            FROM {wh.table(EVENTS_DENORMALIZED)} e JOIN x
              ON CAST(e.client_id AS VARCHAR) = x.client_id AND e.event_date <= x.as_of
            WHERE e.{ident(column)} IS NOT NULL
            GROUP BY x.row_id, CAST(e.{ident(column)} AS VARCHAR)
            ORDER BY 1, 2"""
        ).rename(columns={"row_id": "row"})
    return out


# --- folding dimensions back to entities and features -----------------------------------------

_FEATURE_TITLES = {
    "event_count": "activity: events, {h}-day half-life",
    "value": "spend: value, {h}-day half-life",
    "n_events": "activity: events, whole history",
    "value_total": "spend: value, whole history",
    "days_since_last_event": "recency: days since the last event",
    "active_days": "visits: active days, {h}-day half-life",
    "baskets": "visits: baskets, {h}-day half-life",
    "n_active_days": "visits: active days, whole history",
    "n_baskets": "visits: baskets, whole history",
    "tenure_days": "tenure: days since the first event",
    "last_gap_days": "visits: days between the last two active days",
    "mean_gap_days": "visits: mean days between active days",
}


def feature_title(block: str) -> str:
    """A person's name for a dense profile block ('event_count/h7' -> 'activity: ...')."""
    name, _, h = block.partition("/h")
    return _FEATURE_TITLES.get(name, name).format(h=h)


def fold(
    attributions: Attributions,
    x: np.ndarray,
    layout: ProfileLayout,
    coders: dict[str, SketchCoder],
    history: dict[str, pd.DataFrame],
) -> tuple[pd.DataFrame, np.ndarray]:
    """(reasons, collision_share). reasons: one row per (row, reason) with `kind` (entity or
    feature), `column`, `value` (entity id or the feature's value for the client), `title`,
    `attribution` and the roll-up attribute columns of item entities. Per row the attributions
    sum to the sum of its dimension attributions. collision_share float[n]: the share of the
    row's absolute sketch attribution that sits in buckets holding two or more of its entities
    (there the split between them is by weight, not something the model could tell apart)."""
    a = attributions.attr
    n = len(a)
    block = layout.depth * layout.width
    frames: list[pd.DataFrame] = []
    collided = np.zeros(n)
    sketch_abs = np.zeros(n)
    starts = {name: start for name, start, _ in layout.blocks()}
    for column in layout.columns:
        hist = history.get(column)
        if hist is None or hist.empty:
            continue
        rows = hist["row"].to_numpy(np.int64)
        codes = coders[column].encode(hist["entity"].to_numpy()).astype(np.int64)
        known = codes[:, 0] >= 0
        share = np.zeros(len(hist))
        levels = np.arange(layout.depth, dtype=np.int64) * layout.width
        for k, h in enumerate(layout.half_lives_days):
            w = np.where(known, hist[f"w{k}"].to_numpy(np.float64), 0.0)
            start = starts[f"sketch/h{h:g}/{column}"]
            key = rows[:, None] * block + levels[None, :] + np.where(known[:, None], codes, 0)  # [m, depth]
            mass = np.bincount(key.ravel(), weights=np.repeat(w, layout.depth), minlength=n * block)
            count = np.bincount(key[known].ravel(), minlength=n * block)
            cell = a[:, start : start + block].reshape(-1)  # attribution of (row, level, bucket)
            ok = mass[key] > 0
            share += np.where(ok, cell[key] * w[:, None] / np.where(ok, mass[key], 1.0), 0.0).sum(1)
            used = mass > 0
            np.add.at(sketch_abs, np.flatnonzero(used) // block, np.abs(cell[used]))
            shared = count >= 2
            np.add.at(collided, np.flatnonzero(shared) // block, np.abs(cell[shared]))
        frame = hist.drop(columns=[c for c in hist.columns if re.fullmatch(r"w\d+", c)]).rename(
            columns={"entity": "value"}
        )
        frame = frame.assign(kind="entity", column=column, title=_entity_titles(frame, column), attribution=share)
        frames.append(frame[known])
    for name, start, _ in layout.blocks():
        if name.startswith("sketch/"):
            continue
        idx = np.arange(n)
        frames.append(
            pd.DataFrame(
                {
                    "row": idx,
                    "kind": "feature",
                    "column": name,
                    "value": [f"{v:.4g}" for v in x[:, start]],
                    "title": feature_title(name),
                    "attribution": a[:, start],
                }
            )
        )
    reasons = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    collision = np.divide(collided, sketch_abs, out=np.zeros(n), where=sketch_abs > 0)
    return reasons, collision


def _entity_titles(frame: pd.DataFrame, column: str) -> np.ndarray:
    """`column = value (attribute = ..., ...)` for each row of a history frame. Built once per
    distinct (value, attributes): the same entities recur across many clients' histories, and
    the string work per row was most of the folding time (hundreds of reasons per client)."""
    keys = ["value", *rollups_of(frame)]
    if frame.empty:
        return np.zeros(0, dtype=object)
    group = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)  # group ids are 0..G-1: first[g] is group g's first row
    entities = frame.iloc[first].reset_index(drop=True)
    title = f"{column} = " + entities["value"].astype(str)
    attrs = [
        pd.Series(np.where(entities[a].notna(), f"{a} = " + entities[a].astype(str), ""), index=entities.index)
        for a in keys[1:]
    ]
    if attrs:
        joined = attrs[0].str.cat(attrs[1:], sep=", ").str.replace(r"(^(, )+|(, )+$)", "", regex=True)
        joined = joined.str.replace(r"(, ){2,}", ", ", regex=True)
        title = title + np.where(joined != "", " (" + joined + ")", "")
    return title.to_numpy(dtype=object)[group]


def rollups_of(frame: pd.DataFrame) -> list[str]:
    """The roll-up attribute columns of a history or reasons frame."""
    fixed = {"row", "entity", "value", "kind", "column", "title", "attribution"}
    return [c for c in frame.columns if c not in fixed and not re.fullmatch(r"w\d+", c)]


def top_reasons(reasons: pd.DataFrame, row: int, k: int) -> pd.DataFrame:
    """The k reasons of one row with the largest absolute attribution: title, direction
    (raises / lowers the score), share of the row's total absolute attribution."""
    mine = reasons[reasons["row"] == row].copy()
    total = float(mine["attribution"].abs().sum()) or 1.0
    mine["share"] = mine["attribution"].abs() / total
    mine["direction"] = np.where(mine["attribution"] >= 0, "raises", "lowers")
    mine = mine.reindex(mine["attribution"].abs().sort_values(ascending=False).index).head(k)
    features = mine["kind"] == "feature"
    mine.loc[features, "title"] = mine.loc[features, "title"] + " = " + mine.loc[features, "value"]
    return mine[["title", "direction", "share", "attribution", "kind", "column", "value"]].reset_index(drop=True)


def global_drivers(reasons: pd.DataFrame, n_rows: int, by: str | None = None, top: int = 15) -> pd.DataFrame:
    """Drivers over many explained rows: mean absolute and mean signed attribution per reason
    (a row without the reason counts as zero). `by`: an item roll-up attribute (the item
    reasons of each row are summed per attribute value first, so a brand's items count as one
    driver)."""
    if reasons.empty or n_rows == 0:
        return pd.DataFrame(columns=["title", "mean_abs", "mean", "rows"])
    if by is None:
        df = reasons.assign(key=reasons["title"])
    elif by in reasons.columns:
        df = reasons[reasons[by].notna()]
        df = df.assign(key=f"{by} = " + df[by].astype(str))
    else:
        return pd.DataFrame(columns=["title", "mean_abs", "mean", "rows"])
    per_row = df.groupby(["key", "row"], sort=False)["attribution"].sum().reset_index()
    per_row["abs"] = per_row["attribution"].abs()
    out = per_row.groupby("key").agg(total_abs=("abs", "sum"), total=("attribution", "sum"), rows=("row", "size"))
    out["mean_abs"], out["mean"] = out["total_abs"] / n_rows, out["total"] / n_rows
    out = out.sort_values("mean_abs", ascending=False).head(top).reset_index().rename(columns={"key": "title"})
    return out[["title", "mean_abs", "mean", "rows"]]


def drivers_markdown(drivers: pd.DataFrame) -> str:
    lines = ["| driver | mean abs | mean | clients |", "| --- | ---: | ---: | ---: |"]
    for _, r in drivers.iterrows():
        lines.append(f"| {r['title']} | {r['mean_abs']:.3g} | {r['mean']:+.3g} | {int(r['rows'])} |")
    return "\n".join(lines)


# --- LightGBM: its own SHAP values --------------------------------------------------------------

_WINDOWED = re.compile(r"^(events|baskets|value|active_days)_(\d+)d$")
_TOP = re.compile(r"^(?P<col>.+)_(?P<j>\d+)_(?P<what>n|value)_(?P<w>\d+)d$")
_AGG_TITLES = {
    "events": "events",
    "baskets": "baskets",
    "value": "spend",
    "active_days": "active days",
}


def aggregate_title(name: str, tops: dict[str, list[str]]) -> str:
    """A person's name for a LightGBM aggregate ('manufacturer_id_0_n_30d' -> 'manufacturer_id
    = 69: events in 30 days')."""
    if name == "recency_days":
        return "recency: days since the last event"
    if name == "first_seen_days":
        return "tenure: days since the first event"
    m = _WINDOWED.match(name)
    if m:
        return f"{_AGG_TITLES[m.group(1)]} in {m.group(2)} days"
    m = _TOP.match(name)
    if m and m.group("col") in tops and int(m.group("j")) < len(tops[m.group("col")]):
        value = tops[m.group("col")][int(m.group("j"))]
        what = "events" if m.group("what") == "n" else "spend"
        return f"{m.group('col')} = {value}: {what} in {m.group('w')} days"
    return name


def gbdt_contributions(model: object, f: np.ndarray) -> np.ndarray:
    """float64[n, n_features]: SHAP contributions of one fitted LightGBM model (raw score:
    log-odds for classifiers), without the bias column; a constant label has none (zeros)."""
    return shap_values(model, f)


def gbdt_drivers(contrib: np.ndarray, names: list[str], tops: dict[str, list[str]], top: int = 15) -> pd.DataFrame:
    """Mean absolute and signed SHAP contribution per aggregate, by the aggregate's title."""
    df = pd.DataFrame(
        {
            "title": [aggregate_title(n, tops) for n in names],
            "mean_abs": np.abs(contrib).mean(0),
            "mean": contrib.mean(0),
            "rows": (contrib != 0).sum(0),
        }
    )
    return df.sort_values("mean_abs", ascending=False).head(top).reset_index(drop=True)


def as_of_examples(client_ids: np.ndarray, as_of: dt.date | list[dt.date]) -> pd.DataFrame:
    """(client_id, as_of) rows for entity_history."""
    ids = np.asarray(client_ids).astype(str)
    days = [as_of] * len(ids) if isinstance(as_of, dt.date) else list(as_of)
    return pd.DataFrame({"client_id": ids, "as_of": days})


# --- putting it together ------------------------------------------------------------------------


@dataclass
class Explanation:
    """Attributions of explained rows (examples: client_id, as_of), their reasons (see fold) and
    collision shares."""

    examples: pd.DataFrame
    attributions: Attributions
    reasons: pd.DataFrame
    collision_share: np.ndarray

    def completeness_gap(self) -> float:
        """The largest |sum of attributions - score change| over the rows."""
        return float(np.abs(self.attributions.delta).max()) if len(self.examples) else 0.0


def explain_rows(
    wh: Warehouse,
    net: BehavioralNet,
    kind: str,
    x: np.ndarray,
    examples: pd.DataFrame,
    coders: dict[str, SketchCoder],
    layout: ProfileLayout,
    rollups: dict[str, list[str]],
    reference: np.ndarray,
    target: np.ndarray | int | None = None,
    history: dict[str, pd.DataFrame] | None = None,
    aggregates: Aggregates | None = None,
) -> Explanation:
    """Explain the network's score of each row of x (the profile of examples.client_id at the
    end of examples.as_of) against the reference population's baseline (reference_baseline).
    `history`: entity_history of the same examples, when already read. `aggregates`: the
    aggregates a network reads after the profile (`with_side_inputs`), credited one reason each
    against the reference population's median."""
    baseline = reference_baseline(reference, layout)
    xs = x
    if aggregates is not None:
        xs = np.concatenate([x, aggregates.rows.astype(x.dtype)], axis=1)
        baseline = np.concatenate([baseline, np.median(np.asarray(aggregates.reference, np.float64), axis=0)])
    attributions = integrated_gradients(net, xs, kind, target, baseline=baseline)
    if history is None:
        history = entity_history(wh, list(layout.columns), rollups, examples, layout.half_lives_days)
    d = x.shape[1]
    reasons, collision = fold(replace(attributions, attr=attributions.attr[:, :d]), x, layout, coders, history)
    if aggregates is not None:
        reasons = pd.concat([reasons, aggregates.reasons(attributions.attr[:, d:])], ignore_index=True)
    return Explanation(examples.reset_index(drop=True), attributions, reasons, collision)


@dataclass
class Aggregates:
    """LightGBM's aggregates as a network's extra inputs: the explained rows' values, the
    reference population's (for the baseline) and the names and top values that title them."""

    rows: np.ndarray
    reference: np.ndarray
    names: list[str]
    tops: dict[str, list[str]]

    def reasons(self, attr: np.ndarray) -> pd.DataFrame:
        """One reason per (row, aggregate) with a non-zero attribution, in `fold`'s format."""
        r, j = np.nonzero(attr)
        titles = [aggregate_title(n, self.tops) for n in self.names]
        return pd.DataFrame(
            {
                "row": r.astype(np.int64),
                "kind": "feature",
                "column": "aggregates",
                "value": [f"{self.rows[a, b]:.4g}" for a, b in zip(r, j, strict=True)],
                "title": [titles[b] for b in j],
                "attribution": attr[r, j],
            }
        )


def drivers_png(tables: dict[str, pd.DataFrame], title: str, top: int = 12) -> bytes | None:
    """Horizontal bars of mean absolute attribution (colour: raises or lowers on average), one
    panel per table; None when every table is empty."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = {k: v.head(top) for k, v in tables.items() if len(v)}
    if not tables:
        return None
    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 0.35 * top + 1.5), squeeze=False)
    for ax, (name, df) in zip(axes[0], tables.items(), strict=True):
        df = df.iloc[::-1]
        colours = ["tab:green" if m >= 0 else "tab:red" for m in df["mean"]]
        ax.barh([str(t)[:60] for t in df["title"]], df["mean_abs"], color=colours)
        ax.set_xlabel("mean |attribution| (green: raises the score on average, red: lowers)")
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _records(df: pd.DataFrame) -> list[dict]:
    return [
        {"driver": r["title"], "mean_abs": float(r["mean_abs"]), "mean": float(r["mean"]), "clients": int(r["rows"])}
        for _, r in df.iterrows()
    ]


def gbdt_label_contributions(kind: str, models: Boosters | None, f: np.ndarray, j: int | None) -> np.ndarray | None:
    """SHAP contributions of the LightGBM baseline for output j (None: the only output)."""
    if not models or not models.models:
        return None
    return KINDS[kind].gbdt_contributions(models, f, j)


def gbdt_top_reasons(
    kind: str, models: Boosters, f: np.ndarray, names: list[str], tops: dict, target: np.ndarray | None, k: int
) -> pd.DataFrame:
    """(row, reason, attribution, share): each row's k inputs with the largest absolute SHAP
    value for the row's output (`target`; None: the one score), titled with the row's value;
    share of the row's total absolute SHAP value. A label LightGBM saw constant in training has
    no model and its rows no reasons."""
    n = len(f)
    titles_of = [aggregate_title(name, tops) for name in names]
    if target is None:
        groups = [(None, np.arange(n))]
    else:
        groups = [(int(j), np.flatnonzero(target == j)) for j in np.unique(target)]
    out = []
    for j, rows in groups:
        contrib = gbdt_label_contributions(kind, models, f[rows], j)
        if contrib is None or not len(rows):
            continue
        size = np.abs(contrib)
        total = size.sum(1)
        order = np.argsort(-size, axis=1, kind="stable")[:, :k]
        r = np.repeat(np.arange(len(rows)), order.shape[1])
        c = order.ravel()
        keep = size[r, c] > 0
        r, c = r[keep], c[keep]
        titles = [f"{titles_of[i]} = {f[rows[a], i]:.4g}" for a, i in zip(r, c, strict=True)]
        out.append(
            pd.DataFrame(
                {
                    "row": rows[r],
                    "reason": titles,
                    "attribution": contrib[r, c],
                    "share": size[r, c] / np.where(total[r] > 0, total[r], 1.0),
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["row", "reason", "attribution", "share"])


def task_drivers(
    wh: Warehouse,
    data: TaskData,
    examples: pd.DataFrame,
    net: BehavioralNet,
    gbdt_models: Boosters | None,
    coders: dict[str, SketchCoder],
    layout: ProfileLayout,
    rollups: dict[str, list[str]],
    n_examples: int,
    n_labels: int,
    seed: int,
) -> dict:
    """Global drivers of a task on a seeded sample of its test examples (profiles as of t-1):
    per explained output (the score; or the n_labels most frequent labels), the top entities and
    features of the fine-tuned network by mean absolute attribution, the same rolled up by each
    item attribute, and the LightGBM baseline's top aggregates by mean absolute SHAP value.
    Returns {"examples", "collision_share", "completeness_gap", "outputs": {label: {table: [...]}}}
    plus the tables as DataFrames under "frames" (for the UI)."""
    task = data.task
    test = data.splits["test"]
    n = len(test.y)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n_examples, n), replace=False))
    x, f = test.x[idx], test.f[idx]
    rows = examples.iloc[idx]
    ex = as_of_examples(rows["client_id"].to_numpy(), [t - dt.timedelta(days=1) for t in rows["t"]])
    history = entity_history(wh, list(layout.columns), rollups, ex, layout.half_lives_days)
    outputs = kind_of(task).explained_outputs(n_labels, data.labels)
    first_rollups = sorted({a for attrs in rollups.values() for a in attrs}, key=lambda a: (a != task.target.column, a))
    out: dict = {"examples": len(idx), "outputs": {}, "frames": {}}
    gaps, collisions = [], []
    for j in outputs:
        label = task.name if j is None else str((data.labels or [])[j])
        explained = explain_rows(wh, net, task.type, x, ex, coders, layout, rollups, x, j, history)
        gaps.append(explained.completeness_gap())
        collisions.append(float(explained.collision_share.mean()) if len(idx) else 0.0)
        frames = {"network": global_drivers(explained.reasons, len(idx))}
        for a in first_rollups:
            frames[f"network, items by {a}"] = global_drivers(explained.reasons, len(idx), by=a, top=10)
        contrib = gbdt_label_contributions(task.type, gbdt_models, f, j)
        if contrib is not None and data.feature_names:
            frames["lightgbm"] = gbdt_drivers(contrib, data.feature_names, data.feature_tops)
        out["frames"][label] = frames
        out["outputs"][label] = {name: _records(df) for name, df in frames.items()}
    out["completeness_gap"] = max(gaps) if gaps else 0.0
    out["collision_share"] = float(np.mean(collisions)) if collisions else 0.0
    return out


def drivers_markdown_all(drivers: dict, top: int = 10) -> str:
    """Per explained output, its driver tables (top rows) as markdown."""
    parts = [
        f"Attributions over {drivers['examples']} test examples; completeness gap "
        f"{drivers['completeness_gap']:.1e}; {drivers['collision_share']:.0%} of sketch attribution sits in "
        "buckets shared by two or more of a client's entities (split between them by weight)."
    ]
    for label, frames in drivers["frames"].items():
        parts.append(f"**{label}**")
        for name, df in frames.items():
            parts.append(f"*{name}*\n\n" + drivers_markdown(df.head(top)))
    return "\n\n".join(parts)


def top_reasons_per_row(reasons: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """(row, rank, reason, direction, share): each row's k largest reasons by absolute
    attribution, share of the row's total absolute attribution."""
    if reasons.empty:
        return pd.DataFrame(columns=["row", "rank", "reason", "direction", "share"])
    df = reasons.assign(abs=reasons["attribution"].abs())
    total = df.groupby("row")["abs"].transform("sum").replace(0.0, 1.0)
    df = df.assign(share=df["abs"] / total).sort_values(["row", "abs"], ascending=[True, False], kind="stable")
    df = df.groupby("row", sort=False).head(k)
    title = np.where(df["kind"] == "feature", df["title"] + " = " + df["value"], df["title"])
    return pd.DataFrame(
        {
            "row": df["row"].to_numpy(),
            "rank": df.groupby("row").cumcount().to_numpy() + 1,
            "reason": title,
            "direction": np.where(df["attribution"] >= 0, "raises", "lowers"),
            "share": df["share"].to_numpy(),
        }
    )
