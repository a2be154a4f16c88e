"""`llava-o1 eval`'s figures: one summary per (strategy, beam width) cell, a Markdown table, and a
plot of accuracy against beam width for each strategy."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from training.labels import WHOLE_ANSWER
from training.verifier_check import auc

JUDGED_STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION", WHOLE_ANSWER)


def summarize(scored: list[dict], strategy: str, beam_width: int) -> dict:
    n = len(scored)

    def mean(key: str) -> float:
        return sum(s[key] for s in scored) / n if n else 0.0

    oracle = [s["oracle"] for s in scored if s.get("oracle") is not None]
    return {
        "strategy": strategy,
        "beam_width": beam_width,
        "verifier": scored[0].get("verifier", "self (pairwise)") if scored else "",
        "questions": n,
        "accuracy": mean("correct"),
        "oracle": sum(oracle) / len(oracle) if oracle and len(oracle) == n else None,
        "valid_structure": mean("valid"),
        "completion_tokens_per_question": mean("completion_tokens"),
        "judge_tokens_per_question": mean("judge_tokens"),
        "judge_calls_per_question": sum(s.get("judge_calls", 0) for s in scored) / n if n else 0.0,
        "retraces_per_question": sum(s.get("retraces", 0) for s in scored) / n if n else 0.0,
        "tokens_per_question": mean("completion_tokens") + mean("judge_tokens"),
        "judge_accuracy": _judge_accuracy(scored),
        "score_auc": _score_auc(scored),
        "by_kind": _by_group(scored, "kind"),
        "by_data": _by_group(scored, "data"),
    }


def _judge_accuracy(scored: list[dict]) -> dict:
    """Per stage: matches between a right and a wrong candidate, and the share the judge got right."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for s in scored:
        for stage, right in s.get("judge_outcomes", []):
            outcomes[stage].append(right)
    return {
        stage: {"matches": len(outcomes[stage]), "accuracy": sum(outcomes[stage]) / len(outcomes[stage])}
        for stage in JUDGED_STAGES
        if outcomes.get(stage)
    }


def _score_auc(scored: list[dict]) -> dict:
    """Per stage: the pointwise verifier's AUC over every candidate it scored (right against wrong,
    ties counting a half), with the counts of each; stages with no right or no wrong are left out."""
    by_stage: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for s in scored:
        for stage, score, right in s.get("scored", []):
            by_stage[stage][0 if right else 1].append(score)
    out = {}
    for stage in JUDGED_STAGES:
        right, wrong = by_stage.get(stage, ([], []))
        if right and wrong:
            out[stage] = {"auc": auc(right, wrong), "right": len(right), "wrong": len(wrong)}
    return out


def _by_group(scored: list[dict], key: str) -> dict:
    groups: dict[str, list[dict]] = {}
    for s in scored:
        groups.setdefault(s.get(key, ""), []).append(s)
    return {
        k: {"questions": len(v), "accuracy": sum(x["correct"] for x in v) / len(v)} for k, v in sorted(groups.items())
    }


def markdown(summaries: list[dict]) -> str:
    """The table: one row per cell; the verifier's pairwise accuracy per stage (pairs between a right
    and a wrong candidate, counts in brackets), then, when any verifier scored pointwise, its AUC."""
    stages = [st for st in JUDGED_STAGES if any(st in s["judge_accuracy"] for s in summaries)]
    head = (
        "| strategy | beam width | verifier | questions | accuracy | oracle (pass@N) | valid structure "
        "| generator tokens/question | verifier tokens/question | verifier calls/question |"
    )
    head += "".join(f" verifier on {st} |" for st in stages)
    rows = [head, "|---" * (10 + len(stages)) + "|"]
    for s in summaries:
        oracle = f"{s['oracle']:.1%}" if s["oracle"] is not None else "-"
        row = (
            f"| {s['strategy']} | {_width(s)} | {s.get('verifier', '')} | {s['questions']} | "
            f"{s['accuracy']:.1%} | {oracle} | {s['valid_structure']:.1%} | "
            f"{s['completion_tokens_per_question']:.1f} | {s['judge_tokens_per_question']:.1f} | "
            f"{s.get('judge_calls_per_question', 0.0):.1f} |"
        )
        for st in stages:
            judged = s["judge_accuracy"].get(st)
            row += f" {judged['accuracy']:.1%} ({judged['matches']}) |" if judged else " - |"
        rows.append(row)
    scored = [s for s in summaries if s.get("score_auc")]
    if scored:
        auc_stages = [st for st in JUDGED_STAGES if any(st in s["score_auc"] for s in scored)]
        rows += ["", "| strategy | beam width | verifier |" + "".join(f" AUC on {st} |" for st in auc_stages)]
        rows.append("|---" * (3 + len(auc_stages)) + "|")
        for s in scored:
            row = f"| {s['strategy']} | {_width(s)} | {s.get('verifier', '')} |"
            for st in auc_stages:
                cell = s["score_auc"].get(st)
                row += f" {cell['auc']:.3f} ({cell['right']}/{cell['wrong']}) |" if cell else " - |"
            rows.append(row)
    return "\n".join(rows)


def _width(summary: dict) -> int | str:
    return "-" if summary["strategy"] == "swires" else summary["beam_width"]  # swires samples by its own counts


def plot(summaries: list[dict], path: str | Path) -> None:
    """Accuracy against beam width, one line per strategy (greedy as a flat line), and dashed the
    oracles: of whole answers (pass@N, when best-of-N or majority was run) and of stage search's
    conclusions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({s["beam_width"] for s in summaries})
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    by_strategy: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        by_strategy[s["strategy"]].append(s)
    for name, cells in by_strategy.items():
        cells.sort(key=lambda c: c["beam_width"])
        if name == "none":
            axis.axhline(100 * cells[0]["accuracy"], color="gray", linestyle=":", label="none (greedy)")
            continue
        axis.plot([c["beam_width"] for c in cells], [100 * c["accuracy"] for c in cells], marker="o", label=name)
    whole = [c for name in ("best_of_n", "majority") for c in by_strategy.get(name, []) if c["oracle"] is not None]
    if whole:
        oracle: dict[int, float] = {}
        for c in whole:
            oracle[c["beam_width"]] = max(oracle.get(c["beam_width"], 0.0), c["oracle"])
        xs = sorted(oracle)
        axis.plot(xs, [100 * oracle[x] for x in xs], color="black", linestyle="--", marker="x", label="oracle (pass@N)")
    staged = [c for c in by_strategy.get("stage", []) if c["oracle"] is not None]
    if staged:
        axis.plot(
            [c["beam_width"] for c in staged],
            [100 * c["oracle"] for c in staged],
            color="gray",
            linestyle="--",
            marker="+",
            label="stage oracle (any conclusion right)",
        )
    axis.set_xscale("log", base=2)
    axis.minorticks_off()
    axis.set(xlabel="beam width N (candidates per step)", ylabel="accuracy (%)", xticks=widths)
    axis.set_xticklabels([str(w) for w in widths])
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
