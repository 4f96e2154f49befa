"""The markdown tables of ``engines_bench.py``: bundle ingest, CPU per request by process, and the model of
what N cores would give (issue 16, "Figures")."""

from __future__ import annotations

from typing import Any

MODEL_CORES = (2, 4, 8, 16)


def ingest_table(rows: list[dict[str, Any]]) -> str:
    """One line per engine and load: resources/s, and the CPU each process group spent per resource."""
    groups = list(rows[0]["cpu_ms_per_resource"]) if rows else []
    lines = ["| engine | load | resources | seconds | resources/s | " + " | ".join(f"CPU ms/res {g}" for g in groups)
             + " |", "|---|---|---:|---:|---:|" + "---:|" * len(groups)]  # fmt: skip
    for row in rows:
        cpu = " | ".join(f"{row['cpu_ms_per_resource'][g]:.2f}" for g in groups)
        lines.append(f"| {row['engine']} | {row['load']} | {row['resources']:,} | {row['seconds']:.1f} | "
                     f"{row['resources_per_s']:,.0f} | {cpu} |")  # fmt: skip
    return "\n".join(lines)


def cpu_table(rows: list[dict[str, Any]]) -> str:
    """CPU milliseconds per operation of each process group, phase by phase (a group idle in a phase shows
    about 0: the phases run one at a time)."""
    measured = [row for row in rows if "cpu_ms_per_op" in row]
    if not measured:
        return ""
    groups = list(measured[0]["cpu_ms_per_op"])
    lines = ["| phase | ops/s | " + " | ".join(f"CPU ms/op {g}" for g in groups) + " |",
             "|---|---:|" + "---:|" * len(groups)]  # fmt: skip
    for row in measured:
        cpu = " | ".join(f"{row['cpu_ms_per_op'][g]:.2f}" for g in groups)
        lines.append(f"| {row['phase']} | {row['ops_per_s']:,.0f} | {cpu} |")
    return "\n".join(lines)


def model(row: dict[str, Any], app: list[str], database: str) -> dict[str, Any]:
    """A linear model from one phase's CPU per request: with N cores for the application processes (``app``:
    API processes, audit loader, load balancer), requests/s = N / (their CPU seconds per request); the database
    needs requests/s x (its CPU seconds per request) cores for that, and one database core caps requests/s at
    1 / (its CPU seconds per request). It leaves out what CPU does not show (locks, fsync, the network)."""
    cpu = row["cpu_ms_per_op"]
    app_ms = sum(cpu[g] for g in app)
    db_ms = cpu[database]
    per_cores = {n: 1000 * n / app_ms if app_ms else 0.0 for n in MODEL_CORES}
    return {"phase": row["phase"], "app_ms": app_ms, "db_ms": db_ms, "per_cores": per_cores,
            "db_cores": {n: rate * db_ms / 1000 for n, rate in per_cores.items()},
            "db_core_cap": 1000 / db_ms if db_ms else 0.0}  # fmt: skip


def model_table(models: list[dict[str, Any]]) -> str:
    heads = " | ".join(f"{n} cores: req/s (DB cores)" for n in MODEL_CORES)
    lines = [f"| phase | app CPU ms/req | DB CPU ms/req | {heads} | one DB core caps at req/s |",
             "|---|---:|---:|" + "---:|" * len(MODEL_CORES) + "---:|"]  # fmt: skip
    for m in models:
        cells = " | ".join(f"{m['per_cores'][n]:,.0f} ({m['db_cores'][n]:.1f})" for n in MODEL_CORES)
        lines.append(f"| {m['phase']} | {m['app_ms']:.2f} | {m['db_ms']:.2f} | {cells} | {m['db_core_cap']:,.0f} |")
    return "\n".join(lines)
