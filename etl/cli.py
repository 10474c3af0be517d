"""`laion-etl`: synth, build, sql, spark-sql-init, dq, export, annotations, tables, clip-input, package-zip, submit.

Exit codes: 0 success, 1 a handled failure (a build step, a broken contract), 2 bad usage,
bad configuration or a missing input. Errors are one line on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from etl.export.layouts import DEFAULT_LAYOUT, LAYOUTS
from etl.project.config import ENGINES, Config, ConfigError, load_config
from etl.project.project import Project, load_project
from etl.build.interrupts import EXIT_INTERRUPTED, RunInterrupted
from etl.build.summary import plural
from etl.warehouse.lock import LockError
from etl.redact import RedactingFormatter, redact
from etl.ingest.sources import MissingInputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("etl")


def comma_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default: given as a value here, or said in words in the
    help itself (`default: ...`) where it is no value (the config's, every table, ...)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default:" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"

    def add_argument(self, action: argparse.Action) -> None:
        # argparse measures the commands' names one indent short, so a name as long as
        # `spark-sql-init` pushed its summary to a line of its own.
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action, argparse._SubParsersAction):
            longest = max(len(self._format_action_invocation(sub)) for sub in action._get_subactions())
            self._action_max_length = max(self._action_max_length,
                                          longest + self._current_indent + 2 * self._indent_increment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laion-etl", formatter_class=HelpWithDefaults,
        description="The LAION-5B wide table: synthetic sources, the layered build, checks, queries, exports.",
        epilog="`laion-etl COMMAND --help` shows a command's options. Exit codes: 0 success, 1 a handled "
               "failure, 2 bad usage, configuration or input.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on failure")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: Optional[str] = None) -> argparse.ArgumentParser:
        """A subcommand: `summary` is its one line in `laion-etl --help`, `description` its own page's."""
        return commands.add_parser(name, help=summary, description=description or summary,
                                   formatter_class=HelpWithDefaults)

    synth = command("synth", "write a synthetic LAION-like source tree")
    synth.add_argument("--out", required=True, type=Path, help="folder to write the sources into")
    synth.add_argument("--rows", type=positive_int, default=20_000, help="base rows over all subsets")
    synth.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same tree")
    synth.add_argument("--parts", type=positive_int, default=3, help="part files per family and subset")
    synth.add_argument("--real-pairs", type=Path, help="parquet of real URL/TEXT pairs to draw from (default: "
                       "made-up URLs and captions)")
    synth.add_argument("--images", choices=("files", "webdataset", "parquet"),
                       help="also write an img2dataset output folder in this format (default: no images)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an earlier synthetic tree in --out (refused for any other content)")

    build = command("build", "rebuild the layers ODS -> DMD -> DMS")
    _add_config(build)
    build.add_argument("--layers", type=comma_list, help="comma-separated layers (default: ods,dmd,dms)")
    build.add_argument("--subsets", type=comma_list,
                       help="comma-separated subsets to rebuild, changed or not (default: every subset whose "
                            "inputs changed since it was built)")
    build.add_argument("--force", action="store_true", help="rebuild every planned table, changed inputs or not")
    build.add_argument("--dry-run", action="store_true", help="print the plan and stop")

    sql = command("sql", "Spark SQL over the laion.* tables (no query: a prompt)",
                  "Run read-only Spark SQL over the laion.* tables: the statements given (separated by ';'), "
                  "or, with none, an interactive prompt.")
    _add_config(sql)
    sql.add_argument("query", nargs="?", help="SQL statements, separated by ';' (default: an interactive prompt)")
    sql.add_argument("--limit", type=positive_int, default=50, help="rows to print per statement")

    dq = command("dq", "validate the current tables without rebuilding")
    _add_config(dq)
    dq.add_argument("--tables", type=comma_list, help="comma-separated tables (default: every built table)")

    export = command("export", "write filtered parts for img2dataset or OpenDataLab",
                     "Write filtered wide-table parts for img2dataset or OpenDataLab's downloader.")
    _add_config(export)
    chosen = export.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--preset", help="a filter preset from conf/presets.yaml (e.g. sd2, laion_art)")
    chosen.add_argument("--where", help="a boolean expression over the wide table's columns")
    export.add_argument("--out", required=True, help="export folder: local path or s3://bucket/prefix, empty or "
                        "holding this same export (rerun: nothing to do, or resume)")
    export.add_argument("--layout", choices=tuple(LAYOUTS), default=DEFAULT_LAYOUT,
                        help="img2dataset: shards/part-NNNNN.parquet (URL, TEXT, --columns); opendatalab: "
                             "laion5b-downloader's <subset>/part-NNNNN-<id>.parquet, one row per subset and hash; "
                             "opendatalab-wide: every column under wide/file_name=<part>/ "
                             f"(default: {DEFAULT_LAYOUT})")
    export.add_argument("--rows-per-shard", type=positive_int, default=10_000, help="rows per shard or part")
    export.add_argument("--overwrite", action="store_true",
                        help="replace what earlier exports wrote in --out and keep every other file (default: refuse "
                             "a folder holding anything but this export)")
    export.add_argument("--columns", type=comma_list, help="img2dataset layout: extra columns beside URL and TEXT "
                        f"(default: {','.join(LAYOUTS[DEFAULT_LAYOUT].default_columns)})")

    annotations = command(
        "annotations", "mindone's dir,text CSVs of the downloaded images",
        "Writes mindone's dir,text CSVs from the wide table, one line per downloaded image, ordered by "
        "image path. For img2dataset 'files' output, dir is relative to the data folder (--per part: "
        "<out>/part_1.csv with part_1/00000/000000000.jpg) or to the image folder (--per folder: "
        "<out>/part_1/00000.csv with 00000/000000000.jpg), where part_1 is an images folder of the config and "
        "the data folder its parent: put the CSVs there (the command prints the cp lines). Images inside webdataset "
        "tars or parquet shards have no file: their dir is the table's member URI (<folder>/00000.tar#000000000.jpg).")
    _add_config(annotations)
    filters = annotations.add_mutually_exclusive_group()
    filters.add_argument("--preset", help="only rows of a filter preset from conf/presets.yaml, e.g. sd2 "
                         "(default: every row with an image)")
    filters.add_argument("--where", help="only rows where this boolean expression over the wide table holds "
                         "(default: every row with an image)")
    annotations.add_argument("--out", required=True, help="a local folder of its own, empty or holding earlier "
                             "annotations (replaced with --overwrite)")
    annotations.add_argument("--per", choices=("part", "folder"), default="part",
                             help="one CSV per images folder (part, mindone's default) or per image folder inside "
                                  "it (folder)")
    annotations.add_argument("--overwrite", action="store_true", help="replace earlier annotations in --out")

    clip = command("clip-input", "clip-retrieval's --input_dataset for a folder",
                   "clip-retrieval's --input_dataset (and inference line) for an img2dataset webdataset folder.")
    clip.add_argument("folder", help="img2dataset output folder (webdataset format)")

    shell_init = command("spark-sql-init", "the init file that shows spark-sql the tables",
                         "The init file that makes Spark's spark-sql shell see every table as laion.<table>, "
                         "and the spark-sql command line reading it.")
    _add_config(shell_init)
    shell_init.add_argument("--out", type=Path, help="file to write and print the command line for "
                            "(default: the statements on stdout)")

    tables = command("tables", "list the tables: name, layer, version, rows, path")
    _add_config(tables)

    package = command("package-zip", "write the zip that spark-submit --py-files ships",
                      "Write the zip that spark-submit --py-files ships: the etl package with its SQL, contracts "
                      "and default configuration.")
    package.add_argument("--out", type=Path, default=Path("dist/etl.zip"), help="zip to write")

    from etl.cluster.submit import DEPLOY_MODES, JOBS

    submit = command("submit", "run build, dq or export under spark-submit",
                     "Run build, dq or export under spark-submit on a cluster: "
                     "laion-etl submit [OPTIONS] -- build --config FILE ...")
    submit.add_argument("--master", help="spark://host:7077, yarn, local[N] ... (default: the config's spark.master)")
    submit.add_argument("--deploy-mode", choices=DEPLOY_MODES, default="client",
                        help="where the driver runs (default: client, here; cluster: beside the executors)")
    submit.add_argument("--executor-python", help="the Python the executors start, e.g. ./laion-env/bin/python "
                        "from --archives (default: the config's spark.conf spark.pyspark.python, else this one)")
    submit.add_argument("--print", action="store_true", help="print the spark-submit line instead of running it")
    submit.add_argument("job", choices=JOBS, help="the job to submit")
    submit.add_argument("job_args", nargs=argparse.REMAINDER, help="the job's own arguments, passed unchanged")
    return parser


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (see README)")
    parser.add_argument("--engine", choices=ENGINES, help="override the config's engine (default: the config's)")
    parser.add_argument("--project-dir", type=Path, help="a project folder (sql/, expectations/, conf/) adding "
                        "to or overriding the bundled tables, families and presets (default: the config's "
                        "project_dir, else only the bundled ones)")


def main(argv: Optional[Sequence[str]] = None, submitted: bool = False) -> int:
    args = build_parser().parse_args(argv)
    # Our progress at INFO; libraries (Great Expectations is chatty) only from WARNING.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler])
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    for library in ("great_expectations", "sqlglot"):
        logging.getLogger(library).setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        if args.command == "synth":
            return _synth(args)
        if args.command == "clip-input":
            return _clip_input(args)
        if args.command == "package-zip":
            return _package_zip(args)
        if args.command == "submit":
            return _submit(args)
        project_dir = str(args.project_dir.resolve()) if args.project_dir else None
        # Under spark-submit the engine is the JVM's whatever the config says; the run records say so too.
        engine = "spark" if submitted else args.engine
        config = load_config(args.config, overrides={"engine": engine, "project_dir": project_dir})
        project = load_project(config.project_dir)
        project.check(config)
        from etl.s3_settings import applied_s3_settings

        with applied_s3_settings(config):  # planning and request checks reach S3 before any engine starts
            return _run_command(args, project, config, submitted)
    except (ConfigError, MissingInputError) as exc:
        print(f"laion-etl: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except LockError as exc:  # another run holds the warehouse: nothing was started
        print(f"laion-etl: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RunInterrupted as exc:
        print(f"laion-etl: {exc}: every table is at its old or its new version; the run is recorded "
              "as interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line for people; the traceback with --verbose
        log.debug("failure detail", exc_info=True)
        print(f"laion-etl: failed: {redact(_first_line(exc))}", file=sys.stderr)
        return EXIT_FAILED


def _run_command(args, project: Project, config: Config, submitted: bool) -> int:
    if args.command == "build":
        return _build(args, project, config, submitted)
    if args.command == "sql":
        return _sql(args, project, config, submitted)
    if args.command == "dq":
        return _dq(args, project, config, submitted)
    if args.command == "export":
        return _export(args, project, config, submitted)
    if args.command == "annotations":
        return _annotations(args, project, config, submitted)
    if args.command == "spark-sql-init":
        return _spark_sql_init(args, project, config)
    return _tables(project, config, submitted)


def _first_line(exc: Exception) -> str:
    """Engine errors carry a JVM or server trace after their first line; the line is the news,
    except for errors raised in a Python worker, whose news is the trace's last `...Error: ` line,
    and object-store errors, whose news is spread over their lines (etl.ingest.storage)."""
    from etl.ingest.storage import describe_storage_error

    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    described = describe_storage_error(text)
    if described:
        return described
    lines = text.splitlines()
    if "Python worker" in lines[0]:
        raised = [line.strip() for line in lines if _RAISED.match(line.strip())]
        if raised:
            return f"in a Python worker: {raised[-1]}"
    return lines[0]


_RAISED = re.compile(r"^[\w.]*(Error|Exception): .+")


def _synth(args) -> int:
    from etl.synth import clear_synthetic_tree, generate

    try:
        if args.overwrite:
            clear_synthetic_tree(args.out)
        summary = generate(args.out, rows=args.rows, seed=args.seed, real_pairs=args.real_pairs,
                           images=args.images, parts=args.parts)
    except ValueError as exc:
        raise ConfigError(f"synth: {exc}") from None
    print(f"wrote synthetic LAION sources to {args.out}")
    for name, counts in summary.items():
        print(f"  {name}: {counts}")
    return EXIT_OK


def _package_zip(args) -> int:
    from etl.cluster.package_zip import write_package_zip

    files = write_package_zip(args.out)
    print(f"wrote {args.out} ({plural(files, 'file')}): spark-submit --py-files {args.out}")
    return EXIT_OK


def _submit(args) -> int:
    """Check the job's arguments and config with the job's own parser before any JVM starts."""
    from etl.cluster.submit import run, submit_line

    job = build_parser().parse_args([args.job, *args.job_args])
    config = load_config(job.config, overrides={"engine": job.engine})
    line = submit_line(config, args.job, args.job_args, master=args.master, deploy_mode=args.deploy_mode,
                       executor_python=args.executor_python)
    if args.print:
        print(line.shell())
        return EXIT_OK
    run(line)


def _build(args, project: Project, config: Config, submitted: bool) -> int:
    from etl.build.plan import make_plan
    from etl.build.summary import format_plan, format_results

    started = time.monotonic()
    plan = make_plan(project, config, layers=args.layers, subsets=args.subsets, force=args.force)
    if args.dry_run:
        print(format_plan(plan))
        return EXIT_OK
    from etl.build.runs import execute_build

    outcome = execute_build(config, plan, submitted=submitted)
    print(format_results(outcome.steps, config, wall_seconds=time.monotonic() - started))
    return _conclude(outcome)


def _dq(args, project: Project, config: Config, submitted: bool) -> int:
    from etl.build.runs import execute_dq
    from etl.build.summary import format_rule_failures

    unknown = [t for t in args.tables or [] if t not in project.tables_by_name]
    if unknown:
        raise ConfigError(f"--tables: unknown table {unknown[0]!r} (known: {', '.join(project.tables_by_name)})")
    outcome = execute_dq(project, config, args.tables, submitted=submitted)
    print(format_rule_failures(outcome.quality))
    return _conclude(outcome)


def _export(args, project: Project, config: Config, submitted: bool) -> int:
    from etl.export.destination import DestinationError
    from etl.export.shards import ExportError, ExportRequest, export_shards, plan_export
    from etl.export.filters import FilterError, resolve_filter
    from etl.engine.session import open_session

    try:
        chosen = resolve_filter(args.preset, args.where, project.wide_table.contract.column_types,
                                project.preset_files)
        request = ExportRequest(filter=chosen, out=args.out, rows_per_shard=args.rows_per_shard,
                                columns=tuple(args.columns) if args.columns else None, layout=args.layout,
                                overwrite=args.overwrite)
        plan = plan_export(project, config, request, pipeline_folders(config))
    except (FilterError, ExportError, DestinationError) as exc:
        raise ConfigError(str(exc)) from None
    with open_session(config, submitted=submitted) as spark:
        result = export_shards(spark, config, plan)
    totals = result.manifest["totals"]
    state = "already complete, nothing written" if result.skipped else "written"
    print(f"export {state}: {plural(totals['rows'], 'row')} in {plural(totals['shards'], 'shard')} "
          f"({plural(totals['bytes'], 'byte')}) under {result.out}")
    print(f"filter: {result.manifest['filter']['where']}  ({result.manifest['source']['table']} version "
          f"{result.manifest['source']['version']})")
    print(f"read with: {result.usage}")
    return EXIT_OK


def _annotations(args, project: Project, config: Config, submitted: bool) -> int:
    from etl.engine.session import open_session
    from etl.export.annotations import (AnnotationError, AnnotationRequest, copy_commands, plan_annotations,
                                        write_annotations)
    from etl.export.destination import DestinationError
    from etl.export.filters import FilterError, resolve_filter

    try:
        chosen = None
        if args.preset is not None or args.where is not None:
            chosen = resolve_filter(args.preset, args.where, project.wide_table.contract.column_types,
                                    project.preset_files)
        request = AnnotationRequest(filter=chosen, out=args.out, per=args.per, overwrite=args.overwrite)
        plan = plan_annotations(project, config, request, pipeline_folders(config))
    except (FilterError, AnnotationError, DestinationError) as exc:
        raise ConfigError(str(exc)) from None
    with open_session(config, submitted=submitted) as spark:
        totals = write_annotations(spark, config, plan).totals
    print(f"annotations written: {plural(totals['images'], 'image')} in {plural(totals['files'], 'CSV file')} "
          f"(one per {args.per}) under {args.out}")
    print(f"rows: {totals['rows']:,} in {plan.source['table']} version {plan.source['version']}"
          + (f" where {chosen.where}" if chosen else "")
          + f"; {totals['rows_without_image']:,} without an image (skipped); {totals['rows_sharing_an_image']:,} "
          f"sharing an image with another row (one line per image)")
    print("for mindone, put the CSVs in the data folder: " + "; ".join(copy_commands(plan)))
    return EXIT_OK


def _clip_input(args) -> int:
    import pyarrow.fs as pafs

    from etl.export.shards import clip_inference_input
    from etl.ingest.storage import filesystem

    fs, inner = filesystem(args.folder)
    names = [info.base_name for info in fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))]
    pattern = clip_inference_input(args.folder, names)
    if pattern is None:
        raise ConfigError(f"{args.folder}: no img2dataset webdataset shards (*.tar) found")
    print(pattern)
    print(f'clip-retrieval inference --input_dataset "{pattern}" --input_format webdataset '
          f"--output_folder <embeddings> --enable_metadata True")
    return EXIT_OK


def _conclude(outcome) -> int:
    """The verdict and where the report is; a failure is re-raised so main() prints one line."""
    if outcome.latest_path is None:  # nothing checked: no verdict on the current tables
        print(f"verdict: none, no table was checked  run {outcome.run_id}")
        print(f"report: {outcome.report_path} (latest.html left as it was: it still shows the last run "
              "that checked tables)")
        return EXIT_OK
    print(f"verdict: {outcome.verdict.upper()}  run {outcome.run_id}")
    print(f"report: {outcome.report_path}")
    if outcome.error is not None:
        raise outcome.error
    return EXIT_FAILED if outcome.verdict == "fail" else EXIT_OK


def _sql(args, project: Project, config: Config, submitted: bool) -> int:
    from etl.build.materialise import register_existing_tables
    from etl.engine.session import open_session
    from etl.warehouse.meta import register_meta_tables
    from etl.warehouse.query import interactive_prompt, run_statements
    from etl.warehouse.read_only_sql import ReadOnlyError, check_read_only, split_statements

    roots = list(pipeline_folders(config))
    if args.query:  # refused before any engine starts
        try:
            for statement in split_statements(args.query):
                check_read_only(statement, roots)
        except ReadOnlyError as exc:
            raise ConfigError(str(exc)) from None
    with open_session(config, submitted=submitted, interactive=args.query is None) as spark:
        register_existing_tables(spark, project, config)
        register_meta_tables(spark, project, config)
        if args.query:
            print("\n\n".join(run_statements(spark, args.query, args.limit, roots)))
        else:
            interactive_prompt(spark, args.limit, roots)
    return EXIT_OK


def _spark_sql_init(args, project: Project, config: Config) -> int:
    import shlex

    from etl.warehouse.spark_sql_shell import init_file_text, present_tables, shell_command

    tables = present_tables(project, config)
    text = init_file_text(config, tables)
    if args.out is None:
        print(text, end="")
        return EXIT_OK
    args.out.write_text(text)
    print(f"wrote {args.out} ({plural(len(tables), 'table')}); Spark's SQL shell over them:")
    print(shlex.join(shell_command(config, str(args.out))))
    return EXIT_OK


def pipeline_folders(config: Config) -> dict[str, str]:
    """The warehouse, the image and the source folders, each with what it is: the analyst prompt
    reads paths only under them, an export writes only outside them."""
    from etl.ingest.storage import glob_root

    globs = [g for subset in config.sources for family_globs in subset.families.values() for g in family_globs]
    folders = {config.warehouse: "the warehouse"}
    for folder in config.images:
        folders.setdefault(folder, "the image folder")
    for folder in map(glob_root, globs):
        folders.setdefault(folder, "the source folder")
    return folders


def _tables(project: Project, config: Config, submitted: bool) -> int:
    from etl.build.summary import format_tables, table_inventory
    from etl.engine.session import open_session

    with open_session(config, submitted=submitted) as spark:
        print(format_tables(table_inventory(spark, project, config)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
