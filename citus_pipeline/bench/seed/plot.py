"""The plot of `bench seed`: stages next to the reference deployment, the reference query at
each stage, the engines' timing queries, the loaders and memory over the main job; one panel
per part that ran."""

from __future__ import annotations

from pathlib import Path

from ...data.queries import TABLE_QUERIES
from ...pipeline.report import REFERENCE_ROWS


def write_plot(out: dict, trace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        p
        for p, have in (
            ("stages", bool(out["stages"])),
            ("query", bool(out["stages"])),
            ("engines", bool(out["queries"])),
            ("loaders", bool(out["loaders"])),
            ("memory", trace is not None and bool(trace.times)),
        )
        if have
    ]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 4.2 * len(panels)))
    axes = [axes] if len(panels) == 1 else list(axes)
    ref_label = f"reference deployment ({REFERENCE_ROWS:,} rows, 3×4 vCPU)"
    ours_label = f"this run ({out['rows']:,} rows, {out['machine'].split(',')[0]})"
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "stages":
            st = [s for s in out["stages"] if s["seconds"]]
            y = range(len(st))
            ax.barh([i + 0.2 for i in y], [s["seconds"] for s in st], 0.4, label=ours_label)
            ax.barh(
                [i - 0.2 for i in y],
                [s["reference_seconds"] or 0 for s in st],
                0.4,
                label=ref_label,
            )
            ax.set_yticks(list(y), [s["name"] for s in st])
            ax.invert_yaxis()
            ax.set_xlabel("wall seconds")
            ax.set_title("Stages of the reference experiment")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif panel == "query":
            st = [s for s in out["stages"] if s["query_median_s"] is not None]
            x = range(len(st))
            ax.bar(
                [i - 0.27 for i in x],
                [s["query_first_s"] for s in st],
                0.27,
                label="this run, first call after the stage",
            )
            ax.bar(
                [i for i in x],
                [s["query_median_s"] for s in st],
                0.27,
                label="this run, settled median",
            )
            ax.bar(
                [i + 0.27 for i in x],
                [s["reference_query_s"] or 0 for s in st],
                0.27,
                label=ref_label,
            )
            ax.set_xticks(list(x), [s["name"] for s in st])
            ax.set_yscale("log")
            ax.set_ylabel("seconds (log)")
            ax.set_title("Reference query count(*) WHERE property_type = 'S' at each stage")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif panel == "engines":
            engines = list(dict.fromkeys(x["engine"] for x in out["queries"]))
            queries = list(TABLE_QUERIES)
            q = {(x["engine"], x["query"]): x["median_s"] for x in out["queries"]}
            w = 0.8 / len(engines)
            for k, e in enumerate(engines):
                ax.bar(
                    [i + (k - (len(engines) - 1) / 2) * w for i in range(len(queries))],
                    [q.get((e, n), 0) for n in queries],
                    w,
                    label=e,
                )
            ax.set_xticks(
                range(len(queries)),
                [n.replace("_", " ") for n in queries],
                fontsize=7,
                rotation=15,
            )
            ax.set_yscale("log")
            ax.set_ylabel("median seconds (log)")
            ax.set_title(f"Timing and ad-hoc queries on {out['rows']:,} rows, warm")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif panel == "loaders":
            lo = out["loaders"]
            ax.barh(range(len(lo)), [x["rows_per_s"] for x in lo])
            ax.set_yticks(range(len(lo)), [x["label"] for x in lo], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("rows per second (higher is better)")
            ax.set_title(
                f"Loaders into a distributed table, {out['rows']:,} rows "
                "(non-empty: the second half into a table holding the first)"
            )
        elif panel == "memory":
            for name, column in trace.series.items():
                ax.plot(
                    trace.times,
                    [v if v is not None else float("nan") for v in column],
                    label=name,
                    linewidth=1,
                )
            ax.set_xlabel("seconds into the main job")
            ax.set_ylabel("MB (members: PSS; loader: RSS)")
            ax.set_title("Memory over the main job")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["write_plot"]
