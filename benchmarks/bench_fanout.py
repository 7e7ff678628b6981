"""LLM fan-out: wall time of N labels through our whole labeling path vs the ideal and vs bare HTTP clients.

Our path: ``core.llm.labeling.label_many`` -> ``LLMGateway`` (cache lookup, ledger) -> ``LiteLLMClient`` (litellm,
retries, concurrency limit) -> HTTP -> the local oracle server (a stand-in LLM answering from human labels)
with a fixed latency, storing every reply in the response cache and every label in a shard log; once in one
process, once spread over forked worker processes by ``core.llm.fanout`` (the job's default, 2), fork included.
Ideal: ceil(N / concurrency) * latency. Baseline measured in the same run: N requests from ``concurrency``
bare aiohttp clients against the same server (the floor the server and network impose).

    .venv/bin/python benchmarks/bench_fanout.py --n 1000 --latency-ms 200 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

from benchmarks.common import append_result, shared_data  # noqa: E402
from core.llm.cache import ResponseCache
from core.llm.client import Endpoint, LiteLLMClient, LLMOptions
from core.llm.fanout import LabelWorker, label_in_processes
from core.llm.gateway import LLMGateway
from core.llm.labeling import LabelPrompt, label_many
from core.llm.ledger import Ledger
from core.schema import Chunk  # noqa: E402
from core.storage.backends import LocalStorage
from core.storage.jsonl_log import LogWriter
from oracle.process import start_oracle  # noqa: E402

PROMPT = LabelPrompt(["ham", "spam"], "Spam is unsolicited commercial messaging; everything else is ham.",
                     "json_schema")


def load_chunks(n: int) -> list[Chunk]:
    rows = [json.loads(line) for line in (shared_data() / "sms_spam.jsonl").open(encoding="utf-8")]
    return [Chunk(id=f"c{i}", text=r["text"], source="sms", position=i) for i, r in enumerate(rows[:n])]


def ours(base_url: str, chunks: list[Chunk], concurrency: int, model: str) -> tuple[float, int]:
    storage = LocalStorage(Path(tempfile.mkdtemp(prefix="fanout-")))
    ledger = Ledger(storage, "ledger/")
    gateway = LLMGateway(LiteLLMClient(LLMOptions(concurrency_limit=concurrency)), ResponseCache(storage), ledger)
    prompt = PROMPT
    endpoint = Endpoint(model, base_url, "sk-bench")
    sink = LogWriter(storage, "labels/")
    started = time.perf_counter()
    labels = asyncio.run(label_many(gateway, endpoint, prompt, chunks, stage="bench", sink=sink,
                                    workers=concurrency))
    elapsed = time.perf_counter() - started
    ledger.close()
    return elapsed, sum(lab.ok for lab in labels)


def ours_processes(base_url: str, chunks: list[Chunk], concurrency: int, model: str, processes: int,
                   ) -> tuple[float, int]:
    """The path the job takes by default: ``core.llm.fanout`` forks ``processes`` children (fork time included)."""
    root = Path(tempfile.mkdtemp(prefix="fanout-mp-"))

    def make(share: int) -> LabelWorker:
        storage = LocalStorage(root)
        ledger = Ledger(storage, "ledger/")
        gateway = LLMGateway(LiteLLMClient(LLMOptions(concurrency_limit=share)), ResponseCache(storage), ledger)
        return LabelWorker(chat=gateway, storage=storage, close=ledger.close)

    started = time.perf_counter()
    labels = label_in_processes(make, Endpoint(model, base_url, "sk-bench"), PROMPT, chunks, stage="bench",
                                prefix="labels/", processes=processes, workers=concurrency)
    return time.perf_counter() - started, sum(lab.ok for lab in labels)


def bare(base_url: str, chunks: list[Chunk], concurrency: int) -> float:
    import aiohttp

    async def run() -> float:
        queue: asyncio.Queue[Chunk] = asyncio.Queue()
        for c in chunks:
            queue.put_nowait(c)
        async with aiohttp.ClientSession() as session:
            async def worker() -> None:
                while not queue.empty():
                    c = queue.get_nowait()
                    body = {"model": "m", "messages": [{"role": "user", "content": f"<text>\n{c.text}\n</text>"}]}
                    async with session.post(base_url + "/chat/completions", json=body) as resp:
                        await resp.read()
            started = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(concurrency)])
            return time.perf_counter() - started

    return asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--latency-ms", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--processes", type=int, default=2, help="worker processes for the multi-process rows")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    load_line = None
    chunks = load_chunks(args.n)
    ideal = math.ceil(len(chunks) / args.concurrency) * args.latency_ms / 1000
    handle = start_oracle(shared_data() / "sms_spam.jsonl", Path(tempfile.mkdtemp()), noise=0.0,
                          latency_ms=args.latency_ms)
    rows = []
    try:
        bare_times = [bare(handle.base_url, chunks, args.concurrency) for _ in range(args.repeats)]
        rows.append(("bare aiohttp clients (baseline)", statistics.median(bare_times), len(chunks)))
        for model, note in (("openai/gpt-4o-mini", "a model in litellm's cost map"),
                            ("openai/oracle-small", "a model litellm cannot price")):
            # Interleaved so that load changes on a shared machine hit every variant alike.
            single, multi = [], []
            for _ in range(args.repeats):
                single.append(ours(handle.base_url, chunks, args.concurrency, model))
                multi.append(ours_processes(handle.base_url, chunks, args.concurrency, model, args.processes))
            rows.append((f"ours, one process, `{model}` ({note})", statistics.median(t for t, _ in single),
                         single[0][1]))
            rows.append((f"ours, {args.processes} worker processes (the default), `{model}`",
                         statistics.median(t for t, _ in multi), multi[0][1]))
    finally:
        handle.stop()
    lines = [f"{args.n} labels, {args.latency_ms} ms latency per call, concurrency {args.concurrency}; "
             f"ideal {ideal:.2f} s; median of {args.repeats} runs each. The server is the oracle stand-in.", "",
             "| path | wall s | x ideal | x bare | labels ok |", "|---|---|---|---|---|"]
    base = rows[0][1]
    for name, t, ok in rows:
        lines.append(f"| {name} | {t:.2f} | {t / ideal:.2f} | {t / base:.2f} | {ok} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        append_result("bench_fanout", table, load_line=load_line)


if __name__ == "__main__":
    main()
