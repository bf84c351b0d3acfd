"""`genbench`: one command per pipeline stage, plus `run` for the whole pipeline through the Prefect flow.

The stage commands are built from the stage declarations (genbench/stages.py): their arguments, path options,
defaults and help. Each command parses its arguments, runs one stage (or, for `run` and `deploy`, the Prefect
driver) and maps input errors (bad params, a missing file, bad images) to a message and exit code 2. Heavy libraries
(torch, mlflow, prefect) and the config schema (which imports the models) load inside the commands, so
`genbench --help` is instant. Paths default to the project layout (genbench/layout.py) under the current folder.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, Optional, TypeVar

import typer

from .components.common.environment import environment
from .components.common.stage import At, Place, Stage
from .layout import REAL, Layout
from .profiles import PROFILES
from .stages import STAGES

if TYPE_CHECKING:
    from .config import Config

app = typer.Typer(
    help="Train, sample and evaluate image generative models reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
HERE = Layout()
stack_app = typer.Typer(help="A local S3 + PostgreSQL + MLflow + Prefect stack on 127.0.0.1, without docker.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")
kfp_app = typer.Typer(help="The Kubeflow Pipelines driver: compile it, submit it to a cluster, or run it here.",
                      no_args_is_help=True)
app.add_typer(kfp_app, name="kfp")
trainjob_app = typer.Typer(help="Kubeflow Trainer v2: one entry's training as a TrainJob (docs/kubeflow.md).",
                           no_args_is_help=True)
app.add_typer(trainjob_app, name="trainjob")
T = TypeVar("T")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"genbench {version('genbench')}")
        raise typer.Exit()


@app.callback()
def _use_running_stack(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Point every command at `genbench stack up`'s servers when they run here (explicit env wins)."""
    from .stack import apply_stack_env

    apply_stack_env(HERE.root)


ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameter file.")]
PoolType = Literal["process", "kubernetes"]  # flows/deployment.py's PoolType, without importing Prefect here
ProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", help=f"{' | '.join(PROFILES)}; overrides the active profile.", show_default=False)]
ENTRY_HELP = ("An entry under `models`: a family's own (vae, dcgan, ddpm, ...) or a named variant of one such as "
              "ddpm_cfg (`genbench models` lists them).")
EntryArg = Annotated[str, typer.Argument(help=ENTRY_HELP, metavar="ENTRY")]
SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", help="Which of `seeds` this run is (default: the first); its files sit under seed-SEED.",
    show_default=False)]


TRY_AGAIN = 75  # sysexits' EX_TEMPFAIL: a server (MLflow, S3, Prefect) was unreachable; the same command may work later


@contextmanager
def _input_errors() -> Iterator[None]:
    """Bad input (ValueError, including ConfigError and pydantic's errors; a missing file) → its message, exit 2; a
    server still unreachable after the retries (`flows.retries.is_transient`) → one line, exit 75."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        from .flows.retries import is_transient

        if not is_transient(exc):
            raise
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: a server did not answer after its retries ({reason}); nothing written so far is lost "
                   "(the trained weights stay in runs/): run the same command again when the server is back",
                   err=True)
        raise typer.Exit(TRY_AGAIN) from None


def _call(component: Callable[..., T], *args: object, **kwargs: object) -> T:
    with _input_errors():
        return component(*args, **kwargs)


def _config(params: Path, profile: str | None, entry: str | None = None) -> Config:
    """Load params (and check that `entry` exists) or exit with code 2, before any output is touched."""
    from .config import load_config

    with _input_errors():
        config = load_config(params, profile)
        if entry is not None:
            config.entry(entry)
        return config


def _seed(config: Config, seed: int | None) -> int:
    with _input_errors():
        return config.check_seed(seed)


def _default(stage: Stage, place: Place) -> str:
    """A place's default path as help shows it, with the instance's names in capitals."""
    return str(place.rule(HERE, At("ENTRY", "SEED", "NAME")))


def _stage_command(name: str, *, real: str | None = None,
                   extra: dict[str, tuple[Any, Any]] | None = None,
                   instead: Callable[..., bool] | None = None) -> None:
    """Add the command `name` built from its stage declaration: ENTRY (per-entry stages; `real` names the stage that
    ENTRY `real` runs) or NAME (sweeps), --params, --profile, --seed, and one path option per place the stage reads
    or writes, each defaulting to its place in the project. `extra` adds options of the command's own, which
    `instead` may act on (returning True when it did the work itself)."""
    stage = STAGES[name]
    shown = [place for place in stage.places if place.role != "scratch"]
    parameters = []
    if stage.over == "entries":
        helptext = ENTRY_HELP + (f" `{REAL}`: the held-out real images, the report's floor." if real else "")
        parameters.append(_param("entry", Annotated[str, typer.Argument(help=helptext, metavar="ENTRY")]))
    elif stage.over == "sweeps":
        parameters.append(_param("name", Annotated[str, typer.Argument(help="A sweep under `sweeps` in the plan.",
                                                                       metavar="NAME")]))
    parameters += [_param("params", ParamsOpt, HERE.params), _param("profile", ProfileOpt, None)]
    if stage.over == "entries":
        parameters.append(_param("seed", SeedOpt, None))
    for place in shown:
        default = _default(stage, place)
        if real and (other := _default(STAGES[real], STAGES[real].place(place.name))) != default:
            default += f"; for {REAL} {other}"
        option = typer.Option(place.option, help=f"{place.help} (default: {default})", show_default=False)
        parameters.append(_param(place.name, Annotated[Optional[Path], option], None))
    for key, (kind, option) in (extra or {}).items():
        parameters.append(_param(key, Annotated[kind, option], None))

    def command(**values: Any) -> None:
        entry, sweep_name = values.pop("entry", None), values.pop("name", None)
        chosen = STAGES[real] if real and entry == REAL else stage
        config = _config(values.pop("params"), values.pop("profile"), entry if chosen.over == "entries" else None)
        at = At()
        if chosen.over == "entries":
            at = At(entry, _seed(config, values.pop("seed")))
        elif chosen.over == "sweeps":
            if sweep_name not in config.sweeps:
                _fail(f"sweeps.{sweep_name} is not in the plan; known: {', '.join(config.sweeps) or 'none'}")
            at = At(config.sweeps[sweep_name].entry, config.seeds[0], sweep_name)
        values.pop("seed", None)
        given = {place.name: values.pop(place.name) for place in shown}
        if instead is not None and instead(config=config, at=at, given=given, **values):
            return
        _run_stage(chosen, config, at, given, **values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = stage.doc
    app.command(name)(command)


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _run_stage(stage: Stage, config: Config, at: At, given: dict[str, Path | None], **extra: Any) -> None:
    """Run one stage instance in this project and print what it did; SIGTERM or Ctrl-C during training exit
    128 + the signal's number, with the checkpoint written."""
    from .components.common.interrupts import Interrupted
    from .components.train.distributed import main_process

    run = stage.bind(config, HERE, at, given=given, **extra)
    try:
        result = _call(stage.execute, run)
    except Interrupted as stopped:
        if main_process():
            typer.echo(str(stopped), err=True)
        raise typer.Exit(128 + stopped.signum) from None
    if main_process():
        typer.echo(stage.says(result, run))


def _sample_registered(config: Config, at: At, given: dict[str, Path | None], model: str | None) -> bool:
    """`genbench sample --model URI`: sample a registered version instead of a run folder."""
    if not model:
        return False
    if given.get("run"):
        _fail("give --run or --model, not both")
    from .components.register.registered_sample import sample_registered

    assert at.entry is not None and isinstance(at.seed, int)
    record = _call(sample_registered, model, at.entry, config.sample, config.sampling_for(at.entry), at.seed,
                   HERE.samples_dir, HERE.root.resolve(), given.get("out"))
    assert record.source is not None, "a registered version's samples record it"
    typer.echo(f"wrote {record.shape} to {record.out} from {record.source.model_name} v{record.source.version}")
    return True


def _tags(config: Config, at: At, given: dict[str, Path | None], tag: list[str] | None) -> bool:
    """`genbench register --tag KEY=VALUE`: checked here, then handed to the stage as its run tags."""
    if any("=" not in item for item in tag or []):
        _fail("--tag takes KEY=VALUE")
    _run_stage(STAGES["register"], config, at, given, tags=dict(item.split("=", 1) for item in tag or []))
    return True


_stage_command("prepare")
_stage_command("train")
_stage_command("fid-curve")
_stage_command("sample", extra={"model": (Optional[str], typer.Option(
    help="Sample a registered version instead of a run folder: models:/genbench-ENTRY@champion or "
         "models:/genbench-ENTRY/VERSION (from the MLflow registry genbench logs to); without --out it writes "
         "samples/ENTRY-vVERSION.npy."))}, instead=_sample_registered)
_stage_command("evaluate", real="evaluate-real")
_stage_command("register", extra={"tag": (Optional[list[str]], typer.Option(
    help="Extra MLflow run tag KEY=VALUE (repeatable)."))}, instead=_tags)


@app.command()
def promote(
    entry: EntryArg,
    version: Annotated[Optional[int], typer.Option(help="Version to consider (default: the latest).")] = None,
    force: Annotated[bool, typer.Option(help="Move the alias even if not better (recorded in a tag).")] = False,
) -> None:
    """Move `champion` to a version only if its FID beats the champion's on the same reference data."""
    from .components.register.registry import promote as run_promote

    result = _call(run_promote, entry, project_dir=HERE.root.resolve(), version=version, force=force)
    verdict = "now champion" if result.promoted else f"champion stays v{result.champion_version}"
    typer.echo(f"{result.model_name} v{result.version}: {verdict} ({result.reason})")


_stage_command("sweep")
_stage_command("report")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Results folder, its summary.json, or a git revision with results/ "
                                            "committed: the baseline.")],
    b: Annotated[Path, typer.Argument(help="Results folder, its summary.json or a git revision, against A.")],
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print the comparison as JSON instead of a table.")] = False,
    fail_on_move: Annotated[bool, typer.Option(
        "--fail-on-move", help="Exit 1 when any number moved beyond its intervals (for CI).")] = False,
) -> None:
    """Which numbers moved from results A to B: each metric's change B − A, "moved" when it exceeds both 95 %
    intervals summed; warns when the data or N differ."""
    from .components.report.compare import compare_summaries, format_comparison

    result = _call(compare_summaries, a, b)
    typer.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) if json_output
               else format_comparison(result))
    if fail_on_move and result.moved:
        raise typer.Exit(1)


@app.command()
def run(params: ParamsOpt = HERE.params, profile: ProfileOpt = None) -> None:
    """The whole pipeline (prepare → train → sample → evaluate → register → report) as a Prefect flow."""
    _config(params, profile)  # fail fast, before Prefect starts
    # The ephemeral server's telemetry write races its own start-up ("database is locked" tracebacks).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default wait for it is short enough for a busy 2-core machine to exceed before any work starts.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from .flows.pipeline import pipeline

    _call(pipeline, params=str(params), profile=profile)


@app.command()
def metrics(
    images: Annotated[list[Path], typer.Argument(
        metavar="[REAL] FAKE", help="REAL then FAKE: .npy (uint8 NHWC) or folders of PNG/JPEG; with --protocol "
                                    "paper, FAKE alone.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the full JSON record instead of a table.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for 95 % intervals of FID, P, R (0: off).")] = 0,
    k: Annotated[int, typer.Option(help="Neighbourhood size of improved precision/recall.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Images per Inception forward pass.")] = 50,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of KID subsets and bootstrap resamples.")] = 0,
    resize: Annotated[str, typer.Option(help="legacy-tf (TF1 bilinear, torch-fidelity's) | clean (clean-fid's "
                                             "PIL bicubic): FIDs of the two are not comparable.")] = "legacy-tf",
    protocol: Annotated[str, typer.Option(
        help="given (FAKE against REAL) | paper (FAKE against the statistics of --dataset's whole training split, "
             "streamed once and cached, fp32: published FID-50k's reference)")] = "given",
    dataset: Annotated[str, typer.Option(help="--protocol paper: fashion_mnist | mnist | cifar10.")] = "fashion_mnist",
    reference_n: Annotated[int, typer.Option(help="--protocol paper: training images kept as rows for "
                                                  "precision/recall, density/coverage and KID.")] = 10000,
) -> None:
    """All metrics (FID, KID, IS, precision/recall, density/coverage) of FAKE against REAL (or, with --protocol
    paper, against the training split); the reference's statistics are cached."""
    if bootstrap < 0:
        _fail("--bootstrap must be >= 0")
    if protocol not in ("given", "paper"):
        _fail(f"--protocol {protocol}: give given or paper")
    wanted = 1 if protocol == "paper" else 2
    if len(images) != wanted:
        _fail(f"{len(images)} image sets given; --protocol {protocol} takes "
              + ("FAKE alone (the reference is the training split)" if wanted == 1 else "REAL then FAKE"))
    for given in images:
        if not given.exists():
            _fail(f"{given}: not found; give a .npy file (uint8 NHWC) or a folder of PNG/JPEG images")
    from .components.evaluate.evaluate import compare
    from .config import DataConfig, EvaluateConfig

    settings = _call(EvaluateConfig, batch_size=batch_size, k=k, device=device, resize=resize,
                     protocol="paper" if protocol == "paper" else "holdout")
    data = _call(DataConfig, dataset=dataset, reference_size=reference_n) if protocol == "paper" else None
    real, fake = (None, images[0]) if protocol == "paper" else (images[0], images[1])
    result = _call(compare, real, fake, cache_dir=HERE.cache, settings=settings, bootstrap=bootstrap, seed=seed,
                   data=data, download_dir=HERE.downloads)
    if json_output:  # the keys `score` measured: an interval or network that was not computed stays out
        typer.echo(json.dumps(result.model_dump(mode="json", exclude_unset=True), indent=2, sort_keys=True))
        return

    def ci(interval: list[float] | None) -> str:
        return f"  [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""

    is_value = result.inception_score
    rows = [
        ("FID", f"{result.fid:.4f}{ci(result.fid_ci95)}"),
        (f"KID ({result.kid_subsets} x {result.kid_subset_size})", f"{result.kid_mean:.6f} ± {result.kid_std:.6f}"),
        ("Inception Score", f"{is_value:.4f} ± {result.inception_score_std:.4f}" if is_value is not None
         else f"unavailable ({result.inception_score_unavailable})"),
        (f"precision (k={result.k})", f"{result.precision:.4f}{ci(result.precision_ci95)}"),
        (f"recall (k={result.k})", f"{result.recall:.4f}{ci(result.recall_ci95)}"),
        (f"density (k={result.density_k})", f"{result.density:.4f}"),
        (f"coverage (k={result.density_k})", f"{result.coverage:.4f}"),
        ("N fake / real", f"{result.n_samples} / {result.n_reference}"),
        ("extractor", f"{result.feature_extractor.name} sha256 {result.feature_extractor.sha256[:12]}"),
        ("preprocessing", ", ".join(f"{key}={value}" for key, value in result.preprocessing.items())),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name:<{width}}  {value}")
    typer.echo(result.protocol.describe())
    for note in result.warnings:
        typer.echo(f"warning: {note}")


def _size(help_text: str, minimum: int = 1) -> Any:
    """A sizing option of `bench`: None takes the device's default (components/bench/bench.py DEFAULT_SIZES; under
    --gpu-evidence, components/bench/evidence.py EVIDENCE_SIZES)."""
    return typer.Option(help=f"{help_text} Default: the device's.", min=minimum)


@app.command()
def bench(
    ctx: typer.Context,
    params: ParamsOpt = HERE.params,
    profile: Annotated[Optional[str], typer.Option(
        help=f"Whose models.ddpm layout to bench ({' | '.join(PROFILES)}; default: the active profile).",
        show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    base_channels: Annotated[Optional[int], typer.Option(
        help="UNet width, overriding the profile's models.ddpm.arch.base_channels.", min=1)] = None,
    timesteps: Annotated[Optional[int], typer.Option(
        help="Diffusion steps T (the DDPM sampler walks all), overriding the profile's.", min=2)] = None,
    ddim_steps: Annotated[int, typer.Option(help="DDIM steps (at most T).", min=1)] = 50,
    batch_size: Annotated[Optional[int], _size("Training images per step.")] = None,
    sample_n: Annotated[Optional[int], _size("Images each sampler draws.")] = None,
    feature_n: Annotated[Optional[int], _size("Images per FID feature pass.")] = None,
    feature_batch: Annotated[Optional[int], _size("Images per Inception forward pass.")] = None,
    repeats: Annotated[Optional[int], _size("Timed repeats (medians are reported).")] = None,
    warmup: Annotated[Optional[int], _size("Untimed repeats before them.", minimum=0)] = None,
    matmul_size: Annotated[Optional[int], _size("Side of the matrix product that measures the peak (bf16; fp32 where "
                                                "bf16 is emulated).")] = None,
    compile_fast: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="Add torch.compile to the fast training path.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Markdown: the speed bench appends its dated row to it (default docs/benchmarks.md); --gpu-evidence "
             "rewrites its table there after every phase (default WORK/evidence.md).", show_default=False)] = None,
    no_write: Annotated[bool, typer.Option("--no-write", help="Only print; append no row.")] = False,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", help="Also save the full record as JSON here (`-`: print it), rewritten as each phase finishes; "
                       "without it the speed bench keeps the finished phases in OUT's .partial.json until it "
                       "ends.")] = None,
    gpu_evidence: Annotated[bool, typer.Option(
        "--gpu-evidence", help="Instead: train the profile's ddpm for --minutes, sample it with DDIM and DPM-Solver++ "
                               "at each --nfe, score --fid-n images each, and write the table with the device's "
                               "name, images/s, MFU and peak memory (docs/benchmarks.md).")] = False,
    minutes: Annotated[float, typer.Option(help="--gpu-evidence: training time in minutes.")] = 2.0,
    fid_n: Annotated[int, typer.Option(help="--gpu-evidence: images drawn and scored per sampler and NFE.",
                                       min=1)] = 10000,
    nfe: Annotated[list[int], typer.Option(
        help="--gpu-evidence: network evaluations per image, one set per value (repeat the option).", min=1)
    ] = [10, 20, 50],
    work: Annotated[Path, typer.Option(
        help="--gpu-evidence: scratch folder (prepared data, reference statistics, the rebuilt FID network).")
    ] = HERE.root / ".genbench" / "gpu-evidence",
    fid_kit: Annotated[Optional[Path], typer.Option(
        help="--gpu-evidence: a folder holding the FID network's arch-only TorchScript (.xz) and fp16 weights, "
             "rebuilt into WORK and scored with, for machines the 87 MB network cannot reach whole.",
        show_default=False)] = None,
) -> None:
    """Training, sampling and FID-feature speed side by side in one run on the DDPM UNet: eager fp32 against the
    fast path, DDPM against DDIM, our feature extractor against torch-fidelity's; FLOPs, MFU; a dated row in
    docs/benchmarks.md. Each phase says when it starts and ends (stderr) and is saved as it finishes. With
    --gpu-evidence, the GPU evidence run instead (docs/benchmarks.md, `genbench bench`)."""
    config = _config(params, profile)
    flags = {option.name: option.opts[0] for option in ctx.command.params}
    # typed on the command line or set by an environment variable; by name: typer may bring its own click
    given = {name for name in flags if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}
    speed_only = ("base_channels", "timesteps", "ddim_steps", "batch_size", "sample_n", "feature_n", "repeats",
                  "warmup", "compile_fast", "no_write")
    evidence_only = ("minutes", "fid_n", "nfe", "work", "fid_kit")
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"--device {device}: use auto, cpu or cuda")
    if gpu_evidence:
        if wrong := [flags[name] for name in speed_only if name in given]:
            _fail(f"{', '.join(wrong)}: {_options(wrong)} of the speed bench, which --gpu-evidence does not run (it "
                  "trains the profile's ddpm for --minutes and scores --fid-n images per sampler and --nfe); drop "
                  f"{_them(wrong)}")
        if minutes <= 0:
            _fail(f"--minutes {minutes:g}: give a positive training time")
        _gpu_evidence(config, device, minutes, fid_n, nfe, work, fid_kit, feature_batch, matmul_size, out, json_path)
        return
    if wrong := [flags[name] for name in evidence_only if name in given]:
        _fail(f"{', '.join(wrong)}: {_options(wrong)} of the GPU evidence run; add --gpu-evidence, or drop "
              f"{_them(wrong)}")
    _speed_bench(config, device, {"base_channels": base_channels, "timesteps": timesteps}, ddim_steps,
                 {"batch_size": batch_size, "sample_n": sample_n, "feature_n": feature_n,
                  "feature_batch": feature_batch, "repeats": repeats, "warmup": warmup, "matmul_size": matmul_size},
                 compile_fast, out or HERE.benchmarks, no_write, json_path)


def _options(flags: list[str]) -> str:
    return "an option" if len(flags) == 1 else "options"


def _them(flags: list[str]) -> str:
    return "it" if len(flags) == 1 else "them"


def _speed_bench(config: Config, device: str, overrides: dict[str, int | None], ddim_steps: int,
                 given: dict[str, int | None], compile_fast: bool, out: Path, no_write: bool,
                 json_path: Path | None) -> None:
    """`genbench bench` without --gpu-evidence: the run, its summary, the JSON record and the row."""
    from .components.bench.bench import BenchSizes, default_sizes
    from .components.bench.bench import bench as run_bench
    from .components.bench.bench_report import append_row, check_table, row, summary
    from .components.bench.progress import Phases
    from .components.common.devices import pick_device
    from .components.common.io import write_json
    from .components.prepare.prepare import image_shape

    settings = config.entry("ddpm")
    with _input_errors():
        arch = type(settings.arch).model_validate(
            settings.arch.model_dump() | {key: value for key, value in overrides.items() if value is not None})
        if ddim_steps > arch.timesteps:
            raise ValueError(f"--ddim-steps {ddim_steps} exceeds the model's {arch.timesteps} timesteps; lower "
                             "--ddim-steps or raise --timesteps")
        target = pick_device(device)
        sizes = BenchSizes(**default_sizes(target) | {k: v for k, v in given.items() if v is not None},
                           ddim_steps=ddim_steps, compile=compile_fast)
        if not no_write:
            check_table(out)
    printed = json_path is not None and str(json_path) == "-"
    saved = json_path if json_path is not None and not printed else None
    partial = saved or (None if no_write else out.with_suffix(".partial.json"))
    if partial is not None:
        typer.echo(f"each finished phase is saved in {partial}", err=True)
    phases = Phases(lambda line: typer.echo(line, err=True), partial)
    with _stopped(partial):
        result = _call(run_bench, arch, settings.train, image_shape(config.data), sizes, target, config.profile,
                       phases)

    for line in summary(result):
        typer.echo(line)
    if printed:
        typer.echo(result.model_dump_json(indent=2))
    if saved is not None:
        write_json(saved, result.model_dump(mode="json"))
    if no_write:
        typer.echo(row(result))
    else:
        append_row(out, result)
        typer.echo(f"appended a row to {out}")
    if partial is not None and partial != saved:
        partial.unlink(missing_ok=True)  # the row holds it all now


def _gpu_evidence(config: Config, device: str, minutes: float, fid_n: int, nfe: list[int], work: Path,
                  fid_kit: Path | None, feature_batch: int | None, matmul_size: int | None, out: Path | None,
                  json_path: Path | None) -> None:
    """`genbench bench --gpu-evidence`: checked before any work, then run, its table and record written after
    every phase (components/bench/evidence.py)."""
    from .components.bench.evidence import EVIDENCE_SIZES, EvidenceSettings, check, gpu_evidence
    from .components.bench.evidence_report import table
    from .components.bench.fid_copy import rebuild
    from .components.bench.progress import Phases
    from .components.common.devices import pick_device
    from .components.common.io import atomic_path, write_json
    from .components.evaluate.inception import FID_WEIGHTS_ENV, extractor_identity

    with _input_errors():
        target = pick_device(device)
        sizes = EVIDENCE_SIZES["cuda" if target.type == "cuda" else "cpu"]
        given = {"feature_batch": feature_batch, "matmul_size": matmul_size}
        settings = EvidenceSettings(**sizes | {key: value for key, value in given.items() if value is not None},
                                    minutes=minutes, fid_n=fid_n, nfe=tuple(nfe))
        check(config, settings)
        network = None if fid_kit is None else rebuild(fid_kit, work / "fid")
    printed = json_path is not None and str(json_path) == "-"
    record = work / "evidence.json" if json_path is None or printed else json_path
    out = out or work / "evidence.md"
    command = (f"genbench bench --gpu-evidence --profile {config.profile} --minutes {settings.minutes:g} "
               f"--fid-n {settings.fid_n} " + " ".join(f"--nfe {n}" for n in settings.nfe))

    def publish(result: Any) -> None:
        write_json(record, result.model_dump(mode="json"))
        with atomic_path(out) as tmp:
            tmp.write_text(table(result, command))

    with environment(FID_WEIGHTS_ENV, None if network is None else str(network)):
        _call(extractor_identity)  # no FID network: exit 2 now, not after the training
        typer.echo(f"the table is rewritten in {out} and the record in {record} as each phase finishes", err=True)
        with _stopped(out):
            result = _call(gpu_evidence, config, settings, work, target,
                           Phases(lambda line: typer.echo(line, err=True)), publish)
    typer.echo(table(result, command), nl=False)
    if printed:
        typer.echo(result.model_dump_json(indent=2))


@contextmanager
def _stopped(saved: Path | None) -> Iterator[None]:
    """Ctrl-C during a bench: one line saying where its finished phases are, and exit code 130 (SIGINT's)."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("stopped" + ("" if saved is None else f"; the phases that finished are in {saved}"), err=True)
        raise typer.Exit(130) from None


@app.command()
def models(params: ParamsOpt = HERE.params, profile: ProfileOpt = None) -> None:
    """Every entry (each family, and any named variant) with its trainable parameter count under the active
    profile's settings."""
    config = _config(params, profile)
    from .components.bench.catalog import describe_families

    typer.echo(f"profile {config.profile}, {config.data.dataset} images")
    rows = describe_families(config.models, config.data, config.seeds[0])
    width = max(len(row.entry) for row in rows)
    typer.echo(f"{'entry':<{width}} {'model':<9} parameters")
    for row in rows:
        count = f"{row.num_parameters:,}" if row.num_parameters is not None else f"n/a: {row.unavailable}"
        typer.echo(f"{row.entry:<{width}} {row.model_class:<9} {count}")


@app.command("params")
def show_params(params: ParamsOpt = HERE.params, profile: ProfileOpt = None) -> None:
    """Every parameter as the active profile resolves it, defaults included, one `key: value  # source` line
    each: the params.yaml key that set it (a profile's override by its full key), plan.yaml, or default."""
    import json as json_text

    from .config import origins

    with _input_errors():
        rows = origins(params, profile)
    width = max(len(f"{key}: {json_text.dumps(value)}") for key, value, _ in rows)
    for key, value, where in rows:
        line = f"{key}: {json_text.dumps(value)}"
        typer.echo(f"{line:<{width}}  # {where}")


@app.command()
def use(
    profile: Annotated[str, typer.Argument(help=f"{' | '.join(PROFILES)}.", metavar="PROFILE")],
    params: ParamsOpt = HERE.params,
) -> None:
    """Make PROFILE active: write plan.yaml (the profile and its plan from params, which dvc.yaml iterates), so
    `dvc repro` and `genbench run` then run that profile. The params are checked under it before anything is
    written; params.yaml itself is never rewritten."""
    from .components.common.io import atomic_path
    from .config import load_config
    from .profiles import load_yaml, plan_path, plan_text

    if profile not in PROFILES:
        from difflib import get_close_matches

        close = get_close_matches(profile, PROFILES, n=1)
        _fail(f"{profile!r} is not a profile{f' (did you mean {close[0]}?)' if close else ''}; profiles: "
              f"{', '.join(PROFILES)}")
    with _input_errors():
        config = load_config(params, profile, plan=False)
        with atomic_path(plan_path(params)) as tmp:
            tmp.write_text(plan_text(load_yaml(params.read_text(), params), profile, params))
    typer.echo(f"{plan_path(params)}: profile {config.profile}: {len(config.entries)} entries × "
               f"{len(config.seeds)} seeds ({', '.join(config.entries)}); sweeps: {', '.join(config.sweeps) or 'none'}")


@app.command()
def deploy(
    name: Annotated[str, typer.Option(help="Deployment name (the flow is genbench-pipeline).")] = "scheduled",
    cron: Annotated[str, typer.Option(help="Cron schedule, in UTC.")] = "0 3 * * *",
    pool: Annotated[str, typer.Option(help="Prefect work pool (created if missing).")] = "genbench",
    pool_type: Annotated[PoolType, typer.Option(
        help="process: a worker on this machine runs the flow in this folder. kubernetes: a Kubernetes worker runs "
             "each flow run as a Job in --image; the pool's base job template is --pool-template.")] = "process",
    image: Annotated[Optional[str], typer.Option(
        help="kubernetes: the genbench image (infra/genbench.Dockerfile) the Jobs run, as the cluster pulls it "
             "(default: `genbench image ref`, from kubeflow.image in params).", show_default=False)] = None,
    pool_template: Annotated[Path, typer.Option(
        help="kubernetes: the base job template the pool gets.")] = HERE.root / "infra" / "k8s" / "prefect-work-pool.json",
    params: ParamsOpt = HERE.params,
    profile: ProfileOpt = None,
) -> None:
    """Create a scheduled Prefect deployment of the pipeline (needs a Prefect server). --params is checked here
    and read where the flow runs: this folder, or with --pool-type kubernetes the image's /opt/genbench, which
    holds the params.yaml it was built with."""
    config = _config(params, profile)
    template = None
    if pool_type == "kubernetes":
        image = image or config.kubeflow.image_ref("cuda")
        if not pool_template.is_file():
            typer.echo(f"error: {pool_template} not found: the work pool's base job template is "
                       "infra/k8s/prefect-work-pool.json in the repository; run from its root or pass --pool-template",
                       err=True)
            raise typer.Exit(2)
        from .flows.deployment import read_pool_template

        template = _call(read_pool_template, pool_template)
    elif image:
        typer.echo("error: --image is for --pool-type kubernetes; a process pool runs the flow in this folder",
                   err=True)
        raise typer.Exit(2)
    if not os.environ.get("PREFECT_API_URL"):
        typer.echo("error: no Prefect server: run `genbench stack up` here or set PREFECT_API_URL", err=True)
        raise typer.Exit(2)
    from .flows.deployment import deploy as run_deploy

    deployment_id = _call(run_deploy, HERE.root, name, cron, pool, {"params": str(params), "profile": profile},
                          pool_type=pool_type, image=image, template=template)
    typer.echo(f"deployment genbench-pipeline/{name} ({deployment_id}) on {pool_type} pool {pool!r}, cron {cron!r}")
    if pool_type == "kubernetes":
        typer.echo(f"start a worker in the cluster: prefect worker start --pool {pool} --type kubernetes "
                   "(or Prefect's prefect-worker Helm chart)")
    else:
        typer.echo(f"start a worker: prefect worker start --pool {pool}")


@stack_app.command("up")
def stack_up(
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")] = "127.0.0.1",
) -> None:
    """Start SeaweedFS (S3; GENBENCH_S3_ENDPOINT_URL names another), PostgreSQL, an MLflow server and a Prefect
    server; wait until each answers."""
    from .stack import StackError, stack_file, up

    try:
        stack = up(HERE.root, host)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for name, service in stack["services"].items():
        typer.echo(f"{name:8s} {service['url']}  (pid {service['pid']})")
    typer.echo(f"all answering {stack['started_in_s']:.0f} s after the start")
    typer.echo(f"MLflow and Prefect require a login: the credentials are in {stack_file(HERE.root)} (mode 0600).")
    typer.echo("genbench commands in this folder now use these servers, logged in; `genbench stack exec -- CMD` "
               "gives another client (a Prefect worker, dvc) the same access; `genbench stack down` stops them.")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the servers `genbench stack up` started here."""
    from .stack import down

    stopped = down(HERE.root)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no stack was running here")


@stack_app.command("status")
def stack_status() -> None:
    """Show each service's url, pid and health."""
    from .stack import status

    report = status(HERE.root)
    if not report:
        typer.echo("no stack here; `genbench stack up` starts one")
        raise typer.Exit(1)
    for name, info in report.items():
        state = "healthy" if info["healthy"] else "running, not answering" if info["alive"] else "stopped"
        typer.echo(f"{name:8s} {info['url']}  pid {info['pid']}  {state}")
    if not all(info["healthy"] for info in report.values()):
        raise typer.Exit(1)


def _require_stack() -> None:
    """Exit 2 unless `genbench stack up` runs here (its variables are then in os.environ: _use_running_stack)."""
    from .stack import stack_file

    if not stack_file(HERE.root).exists():
        typer.echo("error: no stack here; `genbench stack up` starts one", err=True)
        raise typer.Exit(2)


@stack_app.command("load")
def stack_load(
    clients: Annotated[str, typer.Option(help="Concurrency levels to run in turn, rising.")] = "1,2,4,8,16",
    seconds: Annotated[float, typer.Option(help="How long each level runs.", min=1.0)] = 20.0,
    upload_kb: Annotated[int, typer.Option(help="Size of each artifact upload.", min=1)] = 256,
    out: Annotated[Optional[Path], typer.Option(help="Also write the levels as JSON here.",
                                                show_default=False)] = None,
) -> None:
    """Drive the running stack's MLflow server (and through it S3) with concurrent clients: runs logging
    metrics, registry reads, artifact uploads; print requests per second, p50/p99 latency and errors per level,
    and the level where it degrades. A benchmark: it adds to the stack's registry and bucket, and removes the
    runs and model it made."""
    from .stack.load import degrades_at, drive, parse_levels, table

    _require_stack()
    with _input_errors():
        levels = parse_levels(clients)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    typer.echo(f"{len(levels)} levels of {seconds:.0f} s against {uri}")
    # the client's own retries off: a failed request is counted, not hidden in a retried one's latency
    with environment("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"):
        done = drive(uri, levels, seconds, upload_kb, progress=lambda level: typer.echo(
            f"{level.clients:4d} clients: {level.per_second:7.1f} requests/s, {level.failed} errors of {level.total}"))
    typer.echo(table(done))
    worst = degrades_at(done)
    typer.echo(f"degrades at {worst} clients" if worst else f"still scaling at {levels[-1]} clients")
    if out is not None:
        from .components.common.io import write_json

        write_json(out, {"levels": [level.as_dict() for level in done], "degrades_at": worst})


@stack_app.command("exec", context_settings={"ignore_unknown_options": True})
def stack_exec(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments, after `--`.")],
) -> None:
    """Run COMMAND (e.g. `prefect worker start --pool genbench`, `dvc push`) with the stack's endpoints and
    credentials in its environment, so no one has to copy the secrets out of the stack file."""
    _require_stack()
    try:
        os.execvp(command[0], command)  # the stack's variables are in os.environ since _use_running_stack
    except FileNotFoundError:
        typer.echo(f"error: command not found: {command[0]}; give an executable on PATH", err=True)
        raise typer.Exit(2) from None


@kfp_app.command("compile")
def kfp_compile(
    out: Annotated[Path, typer.Argument(help="Pipeline file to write (KFP IR YAML).")],
    params: ParamsOpt = HERE.params,
    profile: ProfileOpt = None,
) -> None:
    """Write the pipeline for the plan in params (entries, seeds, sweeps) as KFP IR YAML, each task's image,
    resources and secrets from `kubeflow:` in params; needs no cluster."""
    _config(params, profile)
    from .flows.kubeflow import compile_pipeline

    _call(compile_pipeline, params, profile, out)
    typer.echo(f"wrote {out}")


@kfp_app.command("submit")
def kfp_submit(
    mlflow_uri: Annotated[str, typer.Option(help="MLflow tracking server the tasks register to, as the cluster "
                                                 "reaches it (its credentials come from the mlflow secret).")] = "",
    params: ParamsOpt = HERE.params,
    profile: ProfileOpt = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment of the run.")] = "genbench",
    namespace: Annotated[str, typer.Option(help="KFP profile namespace the experiment and run belong to (default: "
                                                "kubeflow.namespace in params).", show_default=False)] = "",
    token_file: Annotated[Optional[Path], typer.Option(
        help="File holding the bearer token KFP accepts (default: $KFP_TOKEN, else the service-account token at "
             "$KF_PIPELINES_SA_TOKEN_PATH, default /var/run/secrets/kubeflow/pipelines/token).",
        show_default=False)] = None,
) -> None:
    """Compile the pipeline and start a run on the KFP endpoint in KFP_HOST, authenticated and in a namespace, after
    checking that the backend is recent enough (docs/kubeflow.md)."""
    host = os.environ.get("KFP_HOST", "").strip()
    if not host:
        typer.echo("error: KFP_HOST is not set: export KFP_HOST=URL of the Kubeflow Pipelines API (e.g. "
                   "http://127.0.0.1:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)",
                   err=True)
        raise typer.Exit(2)
    if not mlflow_uri:
        typer.echo("error: --mlflow-uri is required: the MLflow server the cluster's tasks register to", err=True)
        raise typer.Exit(2)
    config = _config(params, profile)
    from .flows.kfp_client import MIN_BACKEND, find_token, version_text
    from .flows.kubeflow import submit

    token = _call(find_token, token_file)
    namespace = namespace or config.kubeflow.namespace
    run_id, backend = _call(submit, host, params, profile, mlflow_uri, token, namespace, experiment)
    typer.echo(f"started run {run_id} in namespace {namespace} on {host} (KFP backend {backend}; needs "
               f"{version_text(MIN_BACKEND)} or newer)")


@kfp_app.command("local")
def kfp_local(params: ParamsOpt = HERE.params, profile: ProfileOpt = None) -> None:
    """Run the pipeline here under kfp.local (each task a subprocess of this environment, no cluster, no
    container); artifacts under .genbench/kfp, MLflow as `genbench run` uses it."""
    _config(params, profile)
    from .components.register.tracking import configure_tracking
    from .flows.kubeflow import run_local

    tracking_uri = configure_tracking(HERE.root)  # the embedded store, or MLFLOW_TRACKING_URI when set
    index = _call(run_local, HERE.root, params, profile, tracking_uri)
    typer.echo(f"results: {index}")


NodesOpt = Annotated[int, typer.Option(help="Pods (nodes) the run spans; each runs one process per accelerator of "
                                            "kubeflow.resources.train (one on CPU).")]


def _trainjob(entry: str, seed: int | None, nodes: int, params: Path, profile: str | None) -> dict[str, Any]:
    """The TrainJob for ENTRY from params, or exit 2 naming the bad input."""
    config = _config(params, profile, entry)
    from .flows.trainjob import render

    return _call(render, config, entry, _seed(config, seed), nodes)


@trainjob_app.command("render")
def trainjob_render(
    entry: EntryArg,
    seed: SeedOpt = None,
    nodes: NodesOpt = 1,
    out: Annotated[Optional[Path], typer.Option(help="File to write (default: standard output).",
                                                show_default=False)] = None,
    params: ParamsOpt = HERE.params,
    profile: ProfileOpt = None,
) -> None:
    """Write the TrainJob that trains ENTRY with torchrun on the runtime genbench-torch (infra/k8s/runtime.yaml):
    image, resources, placement, namespace, secrets and S3 prefix from params' `kubeflow` section. Needs no cluster;
    `kubectl apply -f` the file, or use `genbench trainjob submit`."""
    import yaml

    text = yaml.safe_dump(_trainjob(entry, seed, nodes, params, profile), sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
        return
    from .components.common.io import atomic_path

    with _input_errors(), atomic_path(out) as tmp:
        tmp.write_text(text)
    typer.echo(f"wrote {out}")


@trainjob_app.command("submit")
def trainjob_submit(
    entry: EntryArg,
    seed: SeedOpt = None,
    nodes: NodesOpt = 1,
    params: ParamsOpt = HERE.params,
    profile: ProfileOpt = None,
) -> None:
    """Create the TrainJob `genbench trainjob render` writes, through the Kubeflow SDK's Kubernetes client
    (kubeconfig's current context, or the pod's service account in a cluster)."""
    manifest = _trainjob(entry, seed, nodes, params, profile)
    from .flows.trainjob import submit

    name = _call(submit, manifest)
    typer.echo(f"created TrainJob {manifest['metadata']['namespace']}/{name}; follow it with "
               f"`kubectl -n {manifest['metadata']['namespace']} get trainjob {name}`")


image_app = typer.Typer(help="The genbench image (infra/genbench.Dockerfile, built by infra/build-image.sh): its "
                             "reference, from params' `kubeflow.image` and `kubeflow.tag`.", no_args_is_help=True)
app.add_typer(image_app, name="image")
# genbench/kubeflow_config.py's ImageVariant, repeated: importing it would import torch (through genbench.models) at
# every command's start; tests/unit/test_image.py holds the two equal
ImageVariant = Literal["cuda", "cpu"]


def _git_commit() -> str:
    """The checkout's HEAD as git abbreviates it (7 hex digits or more), for the image's commit tag."""
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=HERE.root, capture_output=True,
                              text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        _fail("--commit: no git commit here (not a git checkout, or git missing); run it in the repository, or "
              "drop --commit for the version tag")
    return done.stdout.strip()


@image_app.command("ref")
def image_ref(
    variant: Annotated[ImageVariant, typer.Option(
        help="cuda: torch with its CUDA libraries (runs on CPU nodes too). cpu: CPU-only torch, a smaller image.")
    ] = "cuda",
    commit: Annotated[bool, typer.Option(
        "--commit", help="Tag with this checkout's git commit (sha-COMMIT-VARIANT) instead of the version.")] = False,
    params: ParamsOpt = HERE.params,
    profile: ProfileOpt = None,
) -> None:
    """Print the image reference the build pushes and the cluster pulls: `kubeflow.image`:TAG-VARIANT, TAG being
    `kubeflow.tag` or else the genbench version. Manifests, tasks and infra/build-image.sh all name the image
    from that one setting."""
    kubeflow = _config(params, profile).kubeflow
    if commit:
        kubeflow = kubeflow.model_copy(update={"tag": f"sha-{_git_commit()}"})
    typer.echo(kubeflow.image_ref(variant))


if __name__ == "__main__":
    app()
