"""`llava-o1 judge-data`'s work: fresh scenes, the model through the search on them, every judged
candidate labelled, then the judge's pairwise turns (training/judge_data.py) and the pointwise
verifier's turns (training/verifier_data.py) written side by side."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from stage_search.config import SearchConfig
from training.judge_data import Labelled, collect_candidates, pairs_of, write_counterfactual, write_judge_data
from training.records import read_questions
from training.verifier_data import write_counterfactual_verifier, write_verifier_records


def build_judge_data(args, out: Path) -> dict:
    """The command's work: scenes, an engine, the search, labels, files. Returns the summary."""
    from models.engine_factory import start_engine
    from server.default_model import use_default_model
    from training.synthetic_data import write_dataset

    out.mkdir(parents=True, exist_ok=True)
    write_dataset(out, args.n, args.scene_seed, test_fraction=0.0)
    records = read_questions(out / "train.jsonl")
    use_default_model(args)
    config = SearchConfig(
        beam_width=args.beam_width,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens_per_stage=args.max_tokens_per_stage,
        stage_prompt=args.stage_prompt,
        seed=args.search_seed,
    )

    async def run() -> list[Labelled]:
        engine = start_engine(args)
        try:
            return await collect_candidates(
                engine, records, config, concurrency=args.concurrency, whole_answers=not args.no_whole_answers
            )
        finally:
            await engine.shutdown()

    candidates = asyncio.run(run())
    pairs = pairs_of(candidates)
    counts = write_judge_data(out, pairs, config.stages, max_pairs_per_stage_step=args.max_pairs, seed=args.scene_seed)
    verifier = write_verifier_records(out / "verifier.jsonl", candidates, seed=args.scene_seed)
    counterfactual, verifier_counterfactual = {}, {}
    if args.counterfactual:
        counterfactual = write_counterfactual(out, seed=args.scene_seed, stages=config.stages)
        verifier_counterfactual = write_counterfactual_verifier(out, seed=args.scene_seed, stages=config.stages)
    summary = {
        "model": args.model,
        "scenes": len(records),
        "scene_seed": args.scene_seed,
        "beam_width": args.beam_width,
        "temperature": args.temperature,
        "pairs_found": dict(sorted(Counter(p.stage_name for p in pairs).items())),
        "judge_turns_written": counts,
        "counterfactual_turns_written": counterfactual,
        "verifier_turns_written": verifier,
        "verifier_counterfactual_turns_written": verifier_counterfactual,
    }
    (out / "judge_data.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
