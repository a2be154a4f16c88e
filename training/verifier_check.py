"""How well a verifier model separates right from wrong candidates in verifier records (the
search's pointwise prompt, labelled "yes" or "no"), read straight from the model: its P("yes") on each
record, then per stage the accuracy at one half, the AUC, and the pairwise accuracy within each group
(candidates of one context, one right and one wrong). The recipe checks its phases with it on
held-out records; `llava-o1 eval` measures the verifier inside the search."""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path


def auc(right: Sequence[float], wrong: Sequence[float]) -> float:
    """P(a right candidate's score > a wrong one's), ties a half: by ranks, in n log n."""
    ordered = sorted(wrong)
    total = 0.0
    for score in right:
        below = bisect.bisect_left(ordered, score)
        ties = bisect.bisect_right(ordered, score) - below
        total += below + ties / 2
    return total / (len(right) * len(wrong))


def p_yes(
    model_dir: str | Path, records_path: str | Path, *, batch_size: int = 16, limit: int | None = None
) -> list[dict]:
    """Each record (the last turn its verdict) with the model's P("yes") against P("no")."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from models.option_tokens import OptionTokens, softmax
    from training.train import Collator, read_records

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    collate = Collator(processor)
    spellings = OptionTokens(collate.tokenizer).spellings_of(("yes", "no"))
    lines = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line.strip()][:limit]
    examples = read_records(records_path)[:limit]
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = collate(chunk)
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float().log_softmax(-1)
            # The verdict's first token is the first learnt one: read the position before it.
            first = (batch["labels"] != -100).int().argmax(dim=1) - 1
            for row, record in enumerate(lines[start : start + batch_size]):
                logprobs = [float(logits[row, first[row], t]) for t in spellings.token_ids]
                probability = spellings.per_option(softmax(logprobs))[0]
                out.append({**record, "p_yes": probability})
    return out


def summarize(scored: Sequence[dict]) -> dict:
    """Per stage: records, accuracy at one half, AUC, and pairwise accuracy within groups."""
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for record in scored:
        by_stage[record.get("stage", "?")].append(record)
    summary = {}
    for stage, records in sorted(by_stage.items()):
        right = [r["p_yes"] for r in records if r["right"]]
        wrong = [r["p_yes"] for r in records if not r["right"]]
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            groups[r.get("group", r["id"])].append(r)
        pairs = [
            a["p_yes"] > b["p_yes"]
            for members in groups.values()
            for a in members
            if a["right"]
            for b in members
            if not b["right"]
        ]
        summary[stage] = {
            "records": len(records),
            "accuracy": sum((r["p_yes"] > 0.5) == r["right"] for r in records) / len(records),
            "auc": auc(right, wrong) if right and wrong else None,
            "pairs": len(pairs),
            "pairwise_accuracy": sum(pairs) / len(pairs) if pairs else None,
        }
    return summary


# The paper's swires cutoff: its reward model's mean score plus this many standard deviations.
CUTOFF_STDS = 0.2533


def swires_cutoff(scored: Sequence[dict]) -> float:
    """The cutoff swires retraces at, on this verifier's scale: the mean plus 0.2533 standard
    deviations of its log-odds on REASONING candidates (the scores the cutoff is compared with)."""
    import statistics

    from stage_search.pointwise import log_odds

    odds = [log_odds(r["p_yes"]) for r in scored if r.get("stage") == "REASONING"]
    if len(odds) < 2:
        raise ValueError("the cutoff needs the scores of two REASONING candidates at least")
    return statistics.fmean(odds) + CUTOFF_STDS * statistics.stdev(odds)


def question_kind(record: dict) -> str:
    """The demo world's kind of the record's question: count, compare, most (a tie apart), or open."""
    question, answer = record["conversations"][0]["value"], record["conversations"][1]["value"]
    if "How many" in question:
        return "count"
    if "most frequent" in question:
        return "most, tie" if " tie with " in answer else "most"
    return "compare" if "Are there more" in question else "open"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m training.verifier_check",
        description="A verifier's accuracy, AUC and pairwise accuracy per stage on held-out verifier records.",
    )
    parser.add_argument("model")
    parser.add_argument("records", nargs="?", help="verifier records (JSONL); or give --drills")
    parser.add_argument("--limit", type=int, help="the first this many records only")
    parser.add_argument("--drills", type=int, help="instead of records: this many fresh verdict drills")
    parser.add_argument("--drill-seed", type=int, default=9999, help="their seed (default 9999, no training seed)")
    parser.add_argument("--by-question", action="store_true", help="split each stage by the question's kind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.records
        if args.drills:
            from training.verifier_data import verdict_drills, write_records

            path = write_records(Path(scratch) / "drills.jsonl", verdict_drills(args.drills, args.drill_seed))
        elif path is None:
            parser.error("give RECORDS or --drills")
        scored = p_yes(args.model, path, limit=args.limit)
    if args.by_question:
        scored = [{**r, "stage": f"{r.get('stage', '?')} {question_kind(r)}"} for r in scored]
    print(json.dumps(summarize(scored), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
