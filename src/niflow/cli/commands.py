"""``niflow`` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

from niflow import config as cfgmod
from niflow.cli.compare import cmd_compare
from niflow.cli.tables import print_stats_table
from niflow.config import ConfigError
from niflow.data.errors import DataError
from niflow.runs.run import RunError


def _parse_masks(specs: list[str]) -> dict[str, Path]:
    masks: dict[str, Path] = {}
    for spec in specs:
        area, sep, path = spec.partition("=")
        if not sep or not area or not path:
            raise DataError(f"--mask {spec!r}: expected AREA=FILE, e.g. V1=v1.nii.gz")
        if area in masks:
            raise DataError(f"--mask: area {area!r} given twice")
        masks[area] = Path(path)
    return masks


def _parse_voxels(specs: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for spec in specs:
        area, sep, ids = spec.partition(":")
        try:
            vox = [int(v) for v in ids.split(",") if v.strip()]
        except ValueError:
            vox = []
        if not sep or not area or not vox:
            raise DataError(f"--voxels {spec!r}: expected AREA:V1,V2,..., e.g. V1:3,17,40")
        out.setdefault(area, []).extend(vox)
    return out


def cmd_probe(args) -> int:
    from niflow.interpret.probes import ProbeSettings
    from niflow.runs.probe import probe_run
    from niflow.runs.run import MovieRun, load_run

    if args.visual_field_deg is not None and not args.visual_field_deg > 0:
        raise ConfigError(f"--visual-field-deg must be > 0, got {args.visual_field_deg}")
    if (args.bar_step is not None and args.bar_step <= 0) or (
            args.bar_width is not None and args.bar_width <= 0):
        raise ConfigError("--bar-step and --bar-width must be > 0")
    run = load_run(args.run)
    if isinstance(run, MovieRun):
        from niflow.cli.movie_probe import probe_movie

        return probe_movie(args, run)
    res = probe_run(run, args.out, ProbeSettings(bar_step=args.bar_step,
                                                 bar_width=args.bar_width),
                    args.visual_field_deg)
    print(f"{'area':<6} {'voxels':>6} {'pRF σ readout':>13} {'pRF σ in-silico':>15} "
          f"{'centre dist':>11} {'ori select.':>11} {'pref SF c/px':>12}")
    for area, p in res["insilico"].items():
        d = res["checks"]["centre_distance_px"][area]["median"]
        print(f"{area:<6} {len(p['prf_x']):>6} "
              f"{np.nanmedian(res['readout'][area]['prf_sigma']):>13.2f} "
              f"{np.nanmedian(p['prf_sigma']):>15.2f} "
              f"{'n/a' if d is None else f'{d:.2f}':>11} "
              f"{np.nanmedian(p['orientation_selectivity']):>11.2f} "
              f"{np.nanmedian(p['preferred_sf']):>12.3f}")
    for pair, entry in res["checks"]["sizes"].items():
        e = entry["insilico"]
        print(f"{pair.replace('>', ' pRF size > ')} at matched eccentricity (in-silico): "
              f"{e['frac_bins_larger']} of bins")
    print(f"wrote {(args.out or args.run) / 'probe_voxels.csv'} and probe.json")
    return 0


def cmd_baseline(args) -> int:
    from niflow.data.dataset import is_auto, parse_rows
    from niflow.data.io import load_responses, load_stimuli
    from niflow.data.movie import is_movie_data
    from niflow.runs.evaluation import baseline_folder

    if args.permutations < 0:
        raise ConfigError(f"--permutations must be >= 0, got {args.permutations}")
    if args.out.exists() and not args.out.is_dir():
        raise RunError(f"{args.out}: exists and is not a folder")
    if is_movie_data(args.stim, args.bold):
        from niflow.cli.movie import movie_baseline

        return movie_baseline(args)
    if args.test_runs is not None:
        raise ConfigError(f"--test-runs is for movie data ({args.stim} has no 'fps', "
                          f"{args.bold} no 'tr'); for images give the test rows with "
                          f"--test-rows")
    args.features = args.features or ["pixels", "gabor"]
    if "motion-energy" in args.features:
        raise ConfigError(f"--features motion-energy needs movie data ({args.stim} has no "
                          f"'fps', {args.bold} no 'tr'); for images choose pixels and/or gabor")
    stim = load_stimuli(args.stim)
    resp = load_responses(args.bold)
    for area, r in resp.items():
        if r.shape[0] != stim.shape[0]:
            raise DataError(f"{args.bold}: area {area!r} has {r.shape[0]} rows but {args.stim} "
                            f"has {stim.shape[0]} stimuli")
        if not np.isfinite(r).all():
            raise DataError(f"{args.bold}: area {area!r} has NaN or Inf values; ridge needs "
                            f"finite responses")
    test = None
    if not (args.out / "split.json").exists():
        test = parse_rows(_test_rows(args.test_rows, stim.shape[0], args.stim),
                          stim.shape[0], "test rows")
        if is_auto(args.test_rows):
            print(AUTO_ROWS_NOTE)
    args.out.mkdir(parents=True, exist_ok=True)
    results = baseline_folder(stim, resp, args.out, list(dict.fromkeys(args.features)), test,
                              args.permutations)
    print(f"{'area':<6} " + " ".join(f"{'ridge ' + k:>13}" for k in results))
    areas = next(iter(results.values()))
    for area in areas:
        print(f"{area:<6} " + " ".join(
            f"{np.nanmedian(results[k][area]['stats']['r']):>13.3f}" for k in results))
    print(f"wrote {', '.join(f'baseline_{k}.csv' for k in results)} to {args.out}")
    return 0


def cmd_report(args) -> int:
    from niflow.report.html import resolve_run_dir, write_report

    if args.visual_field_deg is not None and not args.visual_field_deg > 0:
        raise ConfigError(f"--visual-field-deg must be > 0, got {args.visual_field_deg}")
    if not (resolve_run_dir(args.run) / "metrics.json").exists():
        raise RunError(f"{args.run}: not a finished run folder (no metrics.json)")
    path = write_report(resolve_run_dir(args.run), args.out, probe_if_missing=not args.no_probe,
                        voxels=_parse_voxels(args.voxels) or None,
                        visual_field_deg=args.visual_field_deg)
    print(f"wrote {path}")
    return 0


def cmd_nifti(args) -> int:
    from niflow.data.io import save_mat, save_npz
    from niflow.data.nifti import (
        is_time_series,
        load_nifti_movie,
        load_nifti_responses,
        movie_import_summary,
    )
    from niflow.runs.nifti import export_nifti

    masks = _parse_masks(args.mask)
    if args.nifti_command == "import":
        movie = (args.tr is not None or bool(args.repeats)
                 or (len(args.nifti) > 1 and is_time_series(args.nifti[0])))
        resp = (load_nifti_movie(args.nifti, masks, args.repeats, args.tr) if movie
                else load_nifti_responses(args.nifti, masks))
        save = {".mat": save_mat, ".npz": save_npz}.get(args.out.suffix.lower())
        if save is None:
            raise DataError(f"{args.out}: write a .mat or .npz response file")
        save(args.out, resp)
        shapes = (movie_import_summary(resp, list(masks), len(args.repeats)) if movie else
                  ", ".join(f"{a}: {r.shape[0]} samples x {r.shape[1]} voxels"
                            for a, r in resp.items()))
        print(f"wrote {args.out} ({shapes})")
        return 0
    paths = export_nifti(args.run, masks, args.out)
    print(f"wrote {len(paths)} images to {paths[0].parent if paths else args.out}")
    return 0


def _resolve_config(args) -> cfgmod.RunConfig:
    """Config file (if any) over the preset (``--preset``, else the file's, else default),
    then command-line overrides."""
    data: dict = {}
    if args.config is not None:
        data = cfgmod.read_json(args.config)
    if args.preset:
        data["preset"] = args.preset
    try:
        cfg = cfgmod.from_dict(data)
        for key in ("epochs", "batch_size", "lr", "seed", "precision"):
            if getattr(args, key, None) is not None:
                setattr(cfg.train, key, getattr(args, key))
        return cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{args.config or 'command line'}: {err}") from None


def _sim_voxels(args) -> dict[str, int]:
    if min(args.v1, args.v2, args.v3) < 0 or args.v3 and not args.v2:
        raise ConfigError("--v1, --v2 and --v3 must be >= 0, and --v3 needs V2 voxels "
                          "(V3 pools V2's features)")
    counts = {"V1": args.v1, "V2": args.v2, "V3": args.v3}
    return {a: n for a, n in counts.items() if n or a != "V3"}


def _simulate_video(args) -> int:
    from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
    from niflow.data.simulate.prf_mapping import simulate_prf_mapping

    if args.prf_mapping and (args.nonlinear or args.motion or args.v3):
        raise ConfigError("--prf-mapping simulates the energy cortex of V1 and V2; drop "
                          "--nonlinear, --motion and --v3")
    if args.prf_mapping:
        sim = simulate_prf_mapping(n_train_runs=args.runs, size=args.size, fps=args.fps,
                                   tr=args.tr, n_voxels={"V1": args.v1, "V2": args.v2},
                                   n_repeats=args.repeats, seed=args.seed)
    else:
        sim = simulate_movie(n_train_runs=args.runs, run_seconds=args.run_seconds,
                             fps=args.fps, tr=args.tr, size=args.size,
                             n_voxels=_sim_voxels(args), n_repeats=args.repeats,
                             nonlinear=args.nonlinear, motion=args.motion, seed=args.seed)
    paths = write_movie_simulation(sim, args.out)
    ceil = {a: float(np.median(t["noise_ceiling"])) for a, t in sim.truth.items()}
    print(f"wrote {paths['stim']} ({sim.stim.shape[0]} frames of {args.size}x{args.size} at "
          f"{args.fps:g} fps, runs 1..{sim.test_run}), {paths['bold']} (TR {args.tr:g} s; "
          f"test run {sim.test_run} repeated {args.repeats}x; median noise ceilings "
          f"{', '.join(f'{a} {c:.2f}' for a, c in ceil.items())}), {paths['truth']}")
    return 0


def cmd_simulate(args) -> int:
    if args.prf_mapping and not args.video:
        raise ConfigError("--prf-mapping is a movie experiment: add --video")
    if args.video:
        return _simulate_video(args)
    from niflow.data.io import load_stimuli
    from niflow.data.simulate.files import simulate
    from niflow.data.simulate.settings import SimConfig

    stim = load_stimuli(args.stim) if args.stim is not None else None
    if stim is not None and stim.ndim != 3:
        raise DataError(f"{args.stim}: variable 'stim' must be (n, height, width) to simulate")
    cfg = SimConfig(output_exponent=args.output_exponent,
                    reliability_range=tuple(args.reliability))
    sim = simulate(args.out, n_per_letter=args.n_per_letter,
                   n_voxels=_sim_voxels(args), seed=args.seed, config=cfg,
                   stim=stim)
    # one response file per repeat, so `niflow evaluate --repeats` can give noise ceilings
    from niflow.data.io import save_mat

    n_rep = sim.config.n_repeats
    for i in range(n_rep):
        save_mat(args.out / f"bold_rep{i + 1}.mat",
                 {a: np.asarray(r[i], dtype=np.float32) for a, r in sim.repeats.items()})
    print(f"wrote {args.out}/stim.mat {sim.stim.shape}, {args.out}/bold.mat "
          f"({', '.join(f'{a}: {r.shape[1]} voxels' for a, r in sim.responses.items())}; "
          f"the mean of {n_rep} repeats, each in bold_rep1..{n_rep}.mat), "
          f"{args.out}/truth.npz")
    return 0


def cmd_train(args) -> int:
    """``niflow train``; Ctrl-C says what was saved and how to resume, and ``--resume`` of a
    finished run says so and exits 0 without touching it."""
    from niflow.cli.safety import interrupted
    from niflow.runs.folder import RunComplete

    try:
        return _train(args)
    except RunComplete as done:
        print(done)
        return 0
    except KeyboardInterrupt as err:
        raise interrupted(err, args.out, getattr(args, "argv", [])) from None


def _train(args) -> int:
    from niflow.data.dataset import DroppedVoxelsWarning, is_auto
    from niflow.runs.inputs import AddedAreasWarning, PooledStimulusWarning, validate_inputs
    from niflow.runs.pipeline import train_inputs, train_stream
    from niflow.train.runtime import runtime_from_environment

    if args.resume and args.force:
        raise RunError("--resume and --force contradict each other; choose one")
    from niflow.data.movie import is_movie_data

    if args.test_runs is not None or is_movie_data(args.stim, args.bold):
        return _train_movie(args)
    if args.resume and args.config is None and (args.out / "config.json").exists():
        args.config = args.out / "config.json"
    cfg = _resolve_config(args)
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    runtime = runtime_from_environment(args.device, args.compile)

    def say_auto_rows() -> None:
        if is_auto(args.test_rows):  # reached only for the BRAINS layout's 360 rows
            print(AUTO_ROWS_NOTE)

    if args.stream:
        test_rows = args.test_rows
        n = _stream_samples(args.stim, cfg) if is_auto(test_rows) else None
        if n is not None:  # the sample count from the file's header: nothing is read
            test_rows = _test_rows(test_rows, n, args.stim)
        run, hist, data = train_stream(
            args.stim, args.bold, args.out, cfg, test_rows, train_rows=args.train_rows,
            num_workers=args.workers, resume=args.resume, force=args.force,
            progress=not args.quiet, memory_check=not args.no_memory_check, runtime=runtime,
            config_source=str(args.config or "command line"), on_start=say_auto_rows,
            on_resume=print)
    else:
        with warnings.catch_warnings():
            # reported below, one line per area, whatever the warning filters say
            warnings.simplefilter("ignore", DroppedVoxelsWarning)
            for said in (AddedAreasWarning, PooledStimulusWarning):
                warnings.simplefilter("ignore", said)
            inputs = validate_inputs(args.stim, args.bold, cfg, args.test_rows,
                                     train_rows=args.train_rows,
                                     config_source=str(args.config or "command line"))

        def report_warnings() -> None:
            say_auto_rows()
            for note in [n for n in (inputs.areas_note, inputs.pooled_note, *inputs.warnings)
                         if n]:
                print(f"niflow train: warning: {note}", file=sys.stderr)

        run, hist, data = train_inputs(inputs, args.out, resume=args.resume, force=args.force,
                                       progress=not args.quiet,
                                       memory_check=not args.no_memory_check,
                                       on_start=report_warnings, runtime=runtime,
                                       on_resume=print)
    if not runtime.is_main:
        return 0  # rank 0 writes and reports
    metrics = json.loads((args.out / "metrics.json").read_text())
    _print_selection(args.out)
    print(f"trained {len(hist.epochs)} epochs (best {hist.best_epoch}); held-out rows: "
          f"{data.split.test.size}")
    _print_area_table(metrics["areas"])
    print(f"run folder: {args.out}")
    return 0


def _train_movie(args) -> int:
    """``niflow train`` on a movie data set (:func:`niflow.runs.movie.train_movie`)."""
    from niflow.data.movie import is_movie_data, parse_runs
    from niflow.runs.movie import train_movie

    if not is_movie_data(args.stim, args.bold):
        raise DataError(f"--test-runs is for movie data, but {args.stim} has no 'fps' and "
                        f"{args.bold} no 'tr'; for images use --test-rows")
    for flag, given in (("--train-rows", args.train_rows),
                        ("--compile", args.compile), ("--batch-size", args.batch_size),
                        ("--test-rows", args.test_rows != "auto")):
        if given:
            raise RunError(f"{flag} is not available for movie data (a video model trains "
                           f"on whole runs: choose them with --test-runs)")
    if args.resume and args.config is None and (args.out / "config.json").exists():
        args.config = args.out / "config.json"
    cfg = _resolve_config(args)
    from niflow.train.runtime import runtime_from_environment

    runtime = runtime_from_environment(args.device, False)
    test_runs = None if args.test_runs is None else parse_runs(args.test_runs)
    train_movie(args.stim, args.bold, args.out, cfg, test_runs,
                force=args.force, progress=not args.quiet, device=str(runtime.device),
                config_source=str(args.config or "command line"), runtime=runtime,
                resume=args.resume)
    if not runtime.is_main:
        return 0  # rank 0 writes and reports
    metrics = json.loads((args.out / "metrics.json").read_text())
    _print_selection(args.out)
    tr = metrics["training"]
    print(f"trained {tr['epochs_run']} epochs (best {tr['best_epoch']}); held-out volumes: "
          f"{metrics['n_test_rows']} (runs {metrics['test_runs']})")
    _print_area_table(metrics["areas"])
    for area, m in metrics["areas"].items():
        ceiling = m.get("median_noise_ceiling")
        print(f"{area}: median HRF peak {m['median_hrf_peak_s']:.2f} s"
              + (f"; median noise ceiling {ceiling:.3f}" if ceiling is not None else ""))
    print(f"run folder: {args.out}")
    return 0


def _print_selection(out: Path) -> None:
    """One line on the model selection recorded in ``out/selection.json``, if any."""
    selection = out / "selection.json"
    if not selection.exists():
        return
    sel = json.loads(selection.read_text())
    scores = ", ".join(f"{k} {v['val_median_r']:.3f}" for k, v in sel["scores"].items()
                       if v["val_median_r"] is not None)
    print(f"selected {sel['chosen'] or 'the configured model'} by validation median r"
          f"{' (' + scores + ')' if scores else ''}; ensemble of {len(sel['members'])} "
          f"model(s); {sel['seconds']:.0f} s")


AUTO_ROWS_NOTE = "test rows: 288:360 (BRAINS layout; pass --test-rows to change)"


def _test_rows(spec: str, n_samples: int, source: Path) -> str:
    """``--test-rows`` with ``auto`` resolved (:func:`niflow.data.dataset.auto_test_rows`)."""
    from niflow.data.dataset import auto_test_rows, is_auto

    return auto_test_rows(n_samples, str(source)) if is_auto(spec) else spec


def _stream_samples(stim_path: Path, cfg: cfgmod.RunConfig) -> int | None:
    """Rows of a streamed stimulus file, from its header; ``None`` if it holds no images
    (``train_stream`` then reports what is wrong with it)."""
    from niflow.data.stream import H5Array

    shape = H5Array.open(stim_path, cfg.data.stim_variable).shape
    return int(shape[0]) if len(shape) in (3, 4) else None


def _print_area_table(areas: dict[str, dict]) -> None:
    print(f"{'area':<6} {'voxels':>6} {'median r':>9} {'mean r':>7} {'r>0.3':>6}")
    def fmt(value, width, digits):
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for area, m in areas.items():
        print(f"{area:<6} {m['n_voxels']:>6} {fmt(m['median_r'], 9, 3)} "
              f"{fmt(m['mean_r'], 7, 3)} {fmt(m['frac_r_above_0.3'], 6, 2)}")


def cmd_cv(args) -> int:
    from niflow.data.io import load_responses, load_stimuli
    from niflow.data.movie import is_movie_data
    from niflow.runs.crossval import cross_validate

    if is_movie_data(args.stim, args.bold):
        from niflow.cli.movie import movie_cv

        return movie_cv(args, _resolve_config(args))
    cfg = _resolve_config(args)
    baselines = _parse_baselines(args.baselines or "pixels,gabor")
    stim = load_stimuli(args.stim, cfg.data.stim_variable)
    resp = load_responses(args.bold)
    inputs = {"stim": str(args.stim), "bold": str(args.bold)}
    groups = None
    if args.groups is not None:
        groups, inputs["groups"] = _load_groups(args.groups, args.stim, stim.shape[0])
    res = cross_validate(stim, resp, cfg, k=args.k or 10, groups=groups,
                         seed=args.fold_seed or 0,
                         out=args.out, baselines=baselines, progress=not args.quiet,
                         force=args.force, inputs=inputs,
                         config_source=str(args.config or "command line"))
    grouped = "" if res.n_groups is None else f", {res.n_groups} groups kept whole"
    print(f"{res.k}-fold cross-validation of {res.folds.size} rows{grouped} "
          f"({res.seconds:.0f} s); median over voxels of the fold-centred out-of-fold r, "
          f"and the fraction of voxels with r > 0.3")
    from niflow.cli.tables import print_cv_table

    print_cv_table(res, args.out)
    return 0


def _parse_baselines(spec: str) -> tuple[str, ...]:
    from niflow.evaluate.baselines import FEATURE_SETS

    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    if kinds in ([], ["none"]):
        return ()
    unknown = [k for k in kinds if k not in FEATURE_SETS]
    if unknown:
        raise ConfigError(f"--baselines {spec!r}: unknown feature set(s) {unknown}; give a "
                          f"comma list of {', '.join(FEATURE_SETS)}, or none")
    return tuple(dict.fromkeys(kinds))


def _load_groups(spec: str, stim_path: Path, n_samples: int) -> tuple[np.ndarray, str]:
    """Group labels of ``--groups``: a label file, ``FILE:VARIABLE`` or a variable of the
    stimulus file; with a one-line error naming the source and the problem.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
    source : str
        Where they came from (recorded in cv.json).
    """
    from niflow.data.io import load_arrays
    from niflow.evaluate.folds import group_codes

    path = Path(spec)
    if path.suffix.lower() in (".txt", ".csv", ".npy"):
        source = str(path)
        labels = _read_label_file(path)
    else:
        file, sep, name = spec.rpartition(":")
        if path.is_file():  # an array file: its only variable
            where, names = path, sorted(load_arrays(path))
            if len(names) != 1:
                raise DataError(f"--groups {spec!r}: {path} holds {len(names)} variables "
                                f"({names}); name one as FILE:VARIABLE")
            name = names[0]
        elif sep and file and Path(file).is_file():
            where = Path(file)
        else:
            where, name = stim_path, spec
        arrays = load_arrays(where)
        if name not in arrays:
            raise DataError(f"--groups {spec!r}: {where} has no variable {name!r} (variables: "
                            f"{sorted(arrays)}); give a .txt/.npy file with one label per "
                            f"row, FILE:VARIABLE, or a variable of the stimulus file")
        source, labels = f"{where}:{name}", np.asarray(arrays[name])
    try:
        group_codes(labels, n_samples)
    except DataError as err:
        raise DataError(f"--groups {source}: {err} ({n_samples} stimuli)") from None
    return labels, source


def _read_label_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"--groups {path}: file not found")
    try:
        if path.suffix.lower() == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        return np.array(path.read_text().replace(",", " ").split())
    except (OSError, ValueError) as err:  # UnicodeDecodeError and format errors included
        raise DataError(f"--groups {path}: not a readable label file "
                        f"({' '.join(str(err).split())})") from None


def cmd_evaluate(args) -> int:
    from niflow._atomic import atomic_write_text
    from niflow.data.io import load_response_repeats, load_stimuli, stack_repeats
    from niflow.data.validate import check_evaluation_arrays
    from niflow.runs.evaluation import evaluate_folder
    from niflow.runs.run import load_run

    if args.bold is None and not args.repeats:
        raise DataError("give --bold, --repeats, or both")
    if args.permutations < 0:
        raise ConfigError(f"--permutations must be >= 0, got {args.permutations}")
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be between 0 and 1, got {args.alpha}")
    run = load_run(args.run)
    if getattr(run, "video", None) is not None:
        from niflow.cli.movie import movie_evaluate

        return movie_evaluate(args, run)
    if args.runs is not None:
        raise ConfigError(f"--runs is for movie runs; {args.run} is an image run: use --rows")
    stim = load_stimuli(args.stim, run.config.data.stim_variable)
    resp, repeats = (load_response_repeats(args.bold) if args.bold is not None
                     else (None, None))
    if args.repeats:
        if repeats is not None:
            raise DataError(f"{args.bold} already has a repeat axis; do not also give "
                            f"--repeats")
        repeats = stack_repeats(args.repeats)
        if resp is None:
            resp = {a: r.mean(0) for a, r in repeats.items()}
    bold_name = str(args.bold if args.bold is not None else args.repeats[0])
    idx = check_evaluation_arrays(stim, resp, run.config, run.model.image_shape,
                                  run.voxel_index, args.rows,
                                  {"stim": str(args.stim), "bold": bold_name})
    for area, rep in (repeats or {}).items():
        if area in resp and rep.shape[1:] != resp[area].shape:
            raise DataError(f"repeats of area {area!r} have shape {rep.shape[1:]} per repeat "
                            f"but the responses have {resp[area].shape}")
    out = args.out if args.out is not None else args.run
    results = evaluate_folder(run, stim, resp, idx, repeats, out, args.permutations,
                              args.alpha, info={"stim": str(args.stim), "bold": bold_name})
    print_stats_table(results)
    if args.json:
        payload = {a: {**{k: v for k, v in res["summary"].items()},
                       "r": res["stats"]["r"].tolist()} for a, res in results.items()}
        atomic_write_text(args.json, json.dumps(payload) + "\n")
    return 0


def cmd_demo(args) -> int:
    from niflow.cli.demo import format_summary, run_demo

    summary = run_demo(args.out, preset=args.preset, n_per_letter=args.n_per_letter,
                       seed=args.seed, epochs=args.epochs, progress=not args.quiet)
    print(format_summary(summary))
    return 0


def cmd_config(args) -> int:
    cfg = cfgmod.load(args.file) if args.file else cfgmod.preset(args.preset)
    try:  # what training would refuse, so that a checked file trains
        cfgmod.check_areas_kept(cfg)
    except cfgmod.ConfigError as err:
        raise cfgmod.ConfigError(f"{args.file}: {err}") from None
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


COMMANDS = {"simulate": cmd_simulate, "train": cmd_train, "cv": cmd_cv,
            "evaluate": cmd_evaluate,
            "demo": cmd_demo, "config": cmd_config, "probe": cmd_probe,
            "baseline": cmd_baseline, "report": cmd_report, "nifti": cmd_nifti,
            "compare": cmd_compare}

