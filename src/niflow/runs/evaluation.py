"""Scoring a trained run on data: statistics, baseline and evaluation folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from niflow.evaluate.statistics import (
    CEILING_METHOD,
    DEFAULT_PERMUTATIONS,
    VOXEL_COLUMNS,
    area_summary,
    read_table,
    voxel_statistics,
    write_table,
)
from niflow.runs.outputs import VOXELS_CSV
from niflow.runs.run import Run


def evaluate_run(run: Run, stim: np.ndarray, responses: dict[str, np.ndarray],
                 rows: np.ndarray | None = None,
                 repeats: dict[str, np.ndarray] | None = None, *,
                 n_permutations: int = DEFAULT_PERMUTATIONS, alpha: float = 0.05,
                 seed: int = 0) -> dict[str, dict]:
    """Score a trained run on arrays: per-voxel statistics and area summaries.

    Parameters
    ----------
    run : niflow.Run
    stim : ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width)
    responses : dict of str to ndarray of shape (n_samples, n_voxels_in_file)
        Columns as in the training file; the run's ``voxel_index`` picks the trained ones.
    rows : ndarray of int, optional
        Rows to score (default all).
    repeats : dict of str to ndarray of shape (n_repeats, n_samples, n_voxels_in_file)

    Returns
    -------
    dict of area to {"voxel": (n_voxels,) input column, "stats": :func:`voxel_statistics`,
    "summary": :func:`area_summary`}
    """
    from niflow.data.errors import DataError

    idx = np.arange(stim.shape[0]) if rows is None else np.asarray(rows)
    pred = run.predict(stim[idx])
    out = {}
    for area, p in pred.items():
        if area not in responses:
            continue
        cols = np.asarray(run.voxel_index[area])
        true = responses[area][idx][:, cols]
        rep = None
        if repeats is not None and area in repeats:
            rep = repeats[area]
            if rep.ndim != 3 or rep.shape[1] != stim.shape[0]:
                raise DataError(f"repeats of area {area!r} have shape {rep.shape}; expected "
                                f"(n_repeats, {stim.shape[0]}, n_voxels)")
            rep = rep[:, idx][:, :, cols]
        stats = voxel_statistics(p, true, rep, n_permutations=n_permutations, alpha=alpha,
                                 seed=seed)
        out[area] = {"voxel": cols, "stats": stats,
                     "summary": area_summary(stats, None if rep is None else rep.shape[0],
                                             alpha)}
    return out


STATS_CSV = "stats_voxels.csv"


STATS_JSON = "stats.json"


def write_statistics(results: dict[str, dict], out_dir: str | Path,
                     info: dict | None = None) -> dict[str, Path]:
    """Write :func:`evaluate_run` results: ``stats_voxels.csv`` and ``stats.json``.

    ``stats_voxels.csv`` has one row per voxel: ``area, voxel`` and :data:`VOXEL_COLUMNS`;
    ``stats.json`` holds the per-area summaries, the ceiling method and ``info``.
    """
    from niflow._atomic import atomic_write_text

    out = Path(out_dir)
    cols: dict[str, list] = {"area": [], "voxel": []}
    for c in VOXEL_COLUMNS:
        cols[c] = []
    for area, res in results.items():
        n = len(res["voxel"])
        cols["area"] += [area] * n
        cols["voxel"] += [int(v) for v in res["voxel"]]
        for c in VOXEL_COLUMNS:
            cols[c] += list(res["stats"][c])
    csv_path = write_table(out / STATS_CSV, cols)
    payload = {"areas": {a: r["summary"] for a, r in results.items()},
               "noise_ceiling": CEILING_METHOD, "p_values": "one-sided permutation test "
               "of Pearson r (rows shuffled), Benjamini-Hochberg FDR per area",
               **(info or {})}
    json_path = atomic_write_text(out / STATS_JSON, json.dumps(payload, indent=2) + "\n")
    return {"csv": csv_path, "json": json_path}


def evaluate_folder(run: Run, stim: np.ndarray, responses: dict[str, np.ndarray],
                    rows: np.ndarray | None, repeats: dict[str, np.ndarray] | None,
                    out_dir: str | Path, n_permutations: int = 1000, alpha: float = 0.05,
                    seed: int = 0, info: dict | None = None) -> dict[str, dict]:
    """:func:`niflow.runs.evaluation.evaluate_run` + ``stats_voxels.csv``, ``stats.json`` and, with
    repeats, ``figures/noise_ceiling.png`` in ``out_dir``."""
    results = evaluate_run(run, stim, responses, rows, repeats, n_permutations=n_permutations,
                           alpha=alpha, seed=seed)
    write_evaluation(results, out_dir, {"rows": None if rows is None else
                                        [int(i) for i in rows], **(info or {})})
    return results


def write_evaluation(results: dict[str, dict], out_dir: str | Path,
                     info: dict | None = None) -> None:
    """:func:`write_statistics`, and ``figures/noise_ceiling.png`` where a ceiling is known
    (image and movie evaluations alike)."""
    from niflow import figures as plots

    write_statistics(results, out_dir, info)
    ceil = {a: r["stats"]["noise_ceiling"] for a, r in results.items()}
    if any(np.isfinite(c).any() for c in ceil.values()):
        plots.plot_noise_ceiling({a: r["stats"]["r"] for a, r in results.items()}, ceil,
                                 Path(out_dir) / "figures" / "noise_ceiling.png")


def baseline_folder(stim: np.ndarray, responses: dict[str, np.ndarray], out: str | Path,
                    kinds: list[str], test_rows: np.ndarray | None = None,
                    n_permutations: int = 1000) -> dict[str, dict]:
    """Ridge baselines written into ``out``; a run folder there sets the split and voxels.

    When ``out`` holds a run (``split.json``), its test rows are used (training: all other
    rows) and only the run's voxels are fitted; otherwise ``test_rows`` is required.
    ``figures/baselines.png`` compares every baseline in the folder with NIF when the run's
    ``voxels.csv`` is there.

    Returns
    -------
    dict of feature set to :func:`niflow.evaluate.baselines.baseline_scores` results
    """
    from niflow.data.dataset import scale_stimuli
    from niflow.data.errors import DataError
    from niflow.evaluate.baselines import baseline_scores, write_baseline

    out = Path(out)
    voxel_index = None
    if (out / "split.json").exists():
        test = np.asarray(json.loads((out / "split.json").read_text())["test"], dtype=np.int64)
        if (out / VOXELS_CSV).exists():
            t = read_table(out / VOXELS_CSV)
            voxel_index = {a: t["voxel"][t["area"] == a].astype(np.int64)
                           for a in dict.fromkeys(t["area"].tolist())}
    elif test_rows is None:
        raise DataError(f"{out}: not a run folder (no split.json); give the test rows")
    else:
        test = np.asarray(test_rows, dtype=np.int64)
    if test.size < 3:
        raise DataError(f"{test.size} test rows: a baseline needs at least 3 to be scored")
    if len(stim) <= int(test.max()):
        raise DataError(f"the test rows go up to {int(test.max())} but there are only "
                        f"{len(stim)} stimuli")
    for area, r in responses.items():
        if voxel_index is not None and area in voxel_index and voxel_index[area].size and \
                r.shape[1] <= int(voxel_index[area].max()):
            raise DataError(f"area {area!r} has {r.shape[1]} voxels; the run used voxel "
                            f"{int(voxel_index[area].max())}")
    x = scale_stimuli(stim)
    results = {}
    for kind in kinds:
        res = baseline_scores(x, responses, test, kind, voxel_index=voxel_index,
                              n_permutations=n_permutations)
        write_baseline(res, out, kind, {"test_rows": [int(i) for i in test]})
        results[kind] = res
    _baseline_figure(out)
    return results


def _baseline_figure(out: Path) -> None:
    from niflow import figures as plots

    if not (out / VOXELS_CSV).exists():
        return
    nif = read_table(out / VOXELS_CSV)
    areas = list(dict.fromkeys(nif["area"].tolist()))
    nif_r, other = {}, {}
    for path in sorted(out.glob("baseline_*.csv")):
        kind = path.stem[len("baseline_"):]
        b = read_table(path)
        other[kind] = {}
        for a in areas:
            m = nif["area"] == a
            lookup = {int(v): r for v, r in zip(b["voxel"][b["area"] == a],
                                                b["r_test"][b["area"] == a], strict=True)}
            vox = nif["voxel"][m].astype(int)
            if all(v in lookup for v in vox):
                other[kind][a] = np.array([lookup[v] for v in vox])
                nif_r[a] = nif["r_test"][m].astype(float)
    if other and nif_r:
        plots.plot_model_comparison(nif_r, other, out / "figures" / "baselines.png")
