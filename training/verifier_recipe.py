"""The demo verifier: a model of its own shape, trained here to say whether a candidate of the demo
model is right, read by the search as a pointwise verifier (P("yes") after the candidate).

`llava-o1 demo-verifier` (or `make demo-verifier`) builds it from scratch, resumably:
1. a random base of VERIFIER_SHAPE: the Idefics3 architecture like the demo model's, but its text
   model has 4 layers of 8 heads (the demo's 3 of 2 share its failing lookup: docs/benchmarks.md),
   and its tokenizer knows the verifier's question;
2. data: drills (text only), counterfactual turns of fresh scenes, and on-policy turns of the demo
   model's own candidates (`llava-o1 judge-data`), all from seeds of their own;
3. training in phases: the check of a conclusion on its shortest drills first (it forms in a couple
   of hundred steps there, not in thousands of whole records), then on the verifier's own turns
   about drills, then whole verifier turns (twice: the second at a lower rate).
Every phase checkpoints; run it again and it goes on from the last checkpoint in its work folder
(or, in a fresh one, from the committed snapshot: `save_progress`). The model is copied to `--out`
(models/demo_verifier) when the phases are done, or with `--partial` as it stands.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stage_search.prompts import verify_question
from stage_search.stages import StageSet
from training.demo_recipe import DEMO_CORPUS
from training.synthetic_data import COLORS, LETTERS
from training.tiny_model import TinyShape, build_tiny_model

_STAGES = StageSet.from_names()
VERIFIER_CORPUS = (
    *DEMO_CORPUS,
    *(verify_question(stage) for stage in _STAGES.stages),
    verify_question(None),
    "yes no",
)
# The demo world's option lines ("B. 5", "C. red", "D. same"), each one token of the verifier's:
# checking a conclusion is then one lookup (the option whose letter is the conclusion's: is its
# value the reasoning's?) instead of two composed ones (the value's letter two tokens back, then
# the match), which did not form in hours of CPU training (docs/benchmarks.md).
OPTION_LINES = tuple(f"{letter}. {value}" for letter in LETTERS for value in (*map(str, range(8)), *COLORS, "same"))
VERIFIER_SHAPE = TinyShape(
    image_size=112,
    vision_hidden=64,
    vision_layers=2,
    text_layers=4,
    text_hidden=256,
    text_heads=8,
    corpus=VERIFIER_CORPUS,
    added_tokens=OPTION_LINES,
)
BASE_SEED = 4321

# Data sources, by name.
BARE_VERDICTS = "bare-verdicts"  # a reasoning, a conclusion and its quoted option, judged: nothing else
VERDICT_DRILLS = "verdict-drills"  # the verifier's turn about one option of a question, text only
COUNTERFACTUAL = "counterfactual"  # fresh scenes' own stages beside wrong copies
ON_POLICY = "on-policy"  # the demo model's own candidates, labelled


@dataclass(frozen=True)
class DataPlan:
    """How much of each source, and the seeds: none of them is an evaluation seed (docs/benchmarks.md)."""

    verdict_drills: int = 20000
    bare_verdict_drills: int = 20000
    drill_seed: int = 600
    counterfactual_scenes: int = 3000
    counterfactual_seed: int = 610
    # (scenes, scene seed, temperature): the demo model's stage search and best-of-N at beam 8.
    on_policy: tuple[tuple[int, int, float], ...] = ((1500, 620, 1.0), (1000, 621, 0.6))
    # Held out: each phase is checked on these scenes' counterfactual records (training/verifier_check.py).
    check_scenes: int = 150
    check_seed: int = 690


@dataclass(frozen=True)
class VerifierPhase:
    name: str
    lr: float
    steps: int
    sources: tuple[str, ...]
    batch_size: int = 32
    warmup_steps: int = 0


_TURNS = (ON_POLICY, COUNTERFACTUAL, VERDICT_DRILLS)
PHASES = (
    # The check in its shortest form first, from the random base: there it forms in a couple of
    # hundred steps. A verifier that began with the letter lookup instead (the first shipped
    # one) never learnt to check a color in thousands of steps, even on these drills.
    VerifierPhase("bare verdicts", 1e-3, 500, (BARE_VERDICTS,), batch_size=64, warmup_steps=50),
    VerifierPhase("verdict drills", 1e-3, 800, (VERDICT_DRILLS,)),
    VerifierPhase("verifier turns", 5e-4, 2500, _TURNS),
    VerifierPhase("verifier turns, annealed", 3e-4, 1200, _TURNS, warmup_steps=50),
)


def default_work_dir() -> Path:
    from training.tiny_model import default_model_dir

    return default_model_dir().parent / "demo-verifier-work"


def build_demo_verifier(
    out: str | Path,
    work: str | Path | None = None,
    *,
    phases: tuple[VerifierPhase, ...] = PHASES,
    plan: DataPlan = DataPlan(),
    max_minutes: float | None = None,
    partial: bool = False,
    progress: str | Path | None = None,
) -> dict:
    """Build (or go on building) the verifier in `work`, from a committed `progress` snapshot when
    `work` has no phase yet; copy it to `out` when every phase is done (or, with `partial`, as it
    stands). Returns the summary written beside it."""
    work = Path(work) if work is not None else default_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        resume_from_progress(work, progress)
    deadline = time.monotonic() + max_minutes * 60 if max_minutes is not None else None
    base = work / "base"
    if not (base / "config.json").exists():
        build_tiny_model(base, VERIFIER_SHAPE, seed=BASE_SEED)
    model, runs = base, []
    for index, phase in enumerate(phases):
        folder = work / f"phase-{index + 1}"
        done = _finished_steps(folder)
        if done < phase.steps:
            left = None if deadline is None else (deadline - time.monotonic()) / 60
            if left is not None and left <= 0:
                runs.append({**asdict(phase), "reached": done, **_losses(folder)})  # where it stands, unchecked
                break
            data = [f for source in phase.sources for f in _source_files(work, plan, source)]
            _train_phase(model, folder, phase, data, left)
            done = _finished_steps(folder)
        runs.append(
            {
                **asdict(phase),
                "reached": done,
                **_losses(folder),
                "check": _check(work, plan, folder, done >= phase.steps),
            }
        )
        if done < phase.steps:
            break
        model = folder
    complete = len(runs) == len(phases) and all(r["reached"] >= r["steps"] for r in runs)
    summary = {
        "recipe": "llava-o1 demo-verifier (training/verifier_recipe.py)",
        "shape": asdict(VERIFIER_SHAPE) | {"corpus": "the demo corpus and the verifier's questions"},
        "base_seed": BASE_SEED,
        "data": asdict(plan),
        "phases": runs,
        "complete": complete,
    }
    if complete or partial:
        last = _latest_model(work, len(runs))
        summary["swires_cutoff"] = _swires_cutoff(work, plan, last)
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        _copy_weights(last, out)
        (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    (work / "recipe.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def save_progress(work: str | Path, dest: str | Path, phases: tuple[VerifierPhase, ...] = PHASES) -> None:
    """What a later sitting needs to go on, small enough to commit: every phase's record and check,
    and the weights of the latest phase reached (the phase's model when it is finished, else its
    latest checkpoint without the optimizer's state, which is twice the weights' size: the run
    goes on with fresh moments). Data and the base are rebuilt from their seeds."""
    work, dest = Path(work), Path(dest)
    folders = sorted(work.glob("phase-*"), key=lambda f: int(f.name.removeprefix("phase-")))
    if not folders:
        raise ValueError(f"{work} holds no phase to save")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for folder in folders:
        (dest / folder.name).mkdir()
        for name in ("training.json", "check.json"):
            if (folder / name).exists():
                shutil.copy2(folder / name, dest / folder.name / name)
    from training.train import latest_checkpoint

    for folder in reversed(folders):  # the latest phase that holds weights (one just begun may hold none)
        if _finished_steps(folder) >= phases[int(folder.name.removeprefix("phase-")) - 1].steps:
            _copy_weights(folder, dest / folder.name)
            break
        checkpoint = latest_checkpoint(folder)  # the run goes on from it (train's resume)
        if checkpoint is not None:
            _copy_weights(checkpoint, dest / folder.name / checkpoint.name)
            break
    if (work / "recipe.json").exists():
        shutil.copy2(work / "recipe.json", dest / "recipe.json")
    (dest / "phases.json").write_text(json.dumps([phase.name for phase in phases]) + "\n")


def resume_from_progress(work: Path, progress: str | Path, phases: tuple[VerifierPhase, ...] = PHASES) -> bool:
    """Seed an empty work folder from a saved snapshot (save_progress); a folder that has phases
    of its own keeps them. A snapshot of other phases (an older recipe's) is refused: its phase-1
    would pass for this recipe's."""
    progress = Path(progress)
    if any(work.glob("phase-*")) or not any(progress.glob("phase-*")):
        return False
    names = progress / "phases.json"
    if not names.exists() or json.loads(names.read_text()) != [phase.name for phase in phases]:
        raise ValueError(f"{progress} is a snapshot of other phases than this recipe's; give another --progress")
    for folder in progress.glob("phase-*"):
        shutil.copytree(folder, work / folder.name)
    return True


def _copy_weights(source: Path, dest: Path) -> None:
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "optimizer.pt"))


def _swires_cutoff(work: Path, plan: DataPlan, model: Path, records: int = 600) -> float:
    """swires's cutoff on this verifier's scale (training/verifier_check.py), from its scores of the
    demo model's own REASONING candidates (the last on-policy set: temperature 0.6, the search's)."""
    from training.verifier_check import p_yes, swires_cutoff

    source = _on_policy_set(work, *plan.on_policy[-1]) / "verifier.jsonl"
    reasoning = source.parent / "cutoff-reasoning.jsonl"  # beside it: its image paths are relative
    lines = [line for line in source.read_text().splitlines() if json.loads(line).get("stage") == "REASONING"]
    reasoning.write_text("".join(line + "\n" for line in lines[:records]))
    return swires_cutoff(p_yes(model, reasoning))


def _train_phase(model: Path, folder: Path, phase: VerifierPhase, data: list[str], minutes: float | None) -> None:
    from training.train import train

    train(
        str(model),
        data,
        str(folder),
        steps=phase.steps,
        max_minutes=minutes,
        batch_size=phase.batch_size,
        lr=phase.lr,
        save_every=100,
        resume=True,
        loss_average="example",
        warmup_steps=phase.warmup_steps,
    )


def _check(work: Path, plan: DataPlan, folder: Path, finished: bool) -> dict:
    """The phase's model on held-out counterfactual records, per stage (kept once it is finished)."""
    from training.synthetic_data import write_dataset
    from training.verifier_check import p_yes, summarize
    from training.verifier_data import write_counterfactual_verifier

    done = folder / "check.json"
    if done.exists():
        return json.loads(done.read_text())
    if not (folder / "config.json").exists():
        return {}
    held_out = work / f"check-{plan.check_seed}"
    if not (held_out / "verifier_counterfactual.jsonl").exists():
        write_dataset(held_out, plan.check_scenes, plan.check_seed, test_fraction=0.0)
        write_counterfactual_verifier(held_out, seed=plan.check_seed)
    summary = summarize(p_yes(folder, held_out / "verifier_counterfactual.jsonl"))
    if finished:
        done.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _training_record(folder: Path) -> dict:
    """The phase's training.json (train's summary), or {} when it has none yet."""
    try:
        return json.loads((folder / "training.json").read_text())
    except (OSError, ValueError):
        return {}


def _finished_steps(folder: Path) -> int:
    """The steps a phase's folder holds a model for (0 when it has none)."""
    return int(_training_record(folder).get("steps", 0))


def _losses(folder: Path) -> dict:
    record = _training_record(folder)
    return {"first_loss": record.get("first_loss"), "last_loss": record.get("last_loss")} if record else {}


def _latest_model(work: Path, phases_run: int) -> Path:
    for index in range(phases_run, 0, -1):
        folder = work / f"phase-{index}"
        if (folder / "config.json").exists():
            return folder
    return work / "base"


def _source_files(work: Path, plan: DataPlan, source: str) -> list[str]:
    """A source's record files, written on first use (kept in `work` for later runs)."""
    from training.synthetic_data import write_dataset
    from training.verifier_data import (
        bare_verdict_drills,
        verdict_drills,
        write_counterfactual_verifier,
        write_records,
    )

    drill_sets = {  # source: (file, how many, seed, builder)
        BARE_VERDICTS: ("bare-verdicts.jsonl", plan.bare_verdict_drills, plan.drill_seed + 4, bare_verdict_drills),
        VERDICT_DRILLS: ("verdicts.jsonl", plan.verdict_drills, plan.drill_seed + 3, verdict_drills),
    }
    if source in drill_sets:
        name, count, seed, build = drill_sets[source]
        path = work / "drills" / name
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            write_records(path, build(count, seed))
        return [str(path)]
    if source == COUNTERFACTUAL:
        folder = work / f"counterfactual-{plan.counterfactual_seed}"
        if not (folder / "verifier_counterfactual.jsonl").exists():
            write_dataset(folder, plan.counterfactual_scenes, plan.counterfactual_seed, test_fraction=0.0)
            write_counterfactual_verifier(folder, seed=plan.counterfactual_seed)
        return [str(folder / "verifier_counterfactual.jsonl")]
    if source == ON_POLICY:
        return [str(_on_policy_set(work, *spec) / "verifier.jsonl") for spec in plan.on_policy]
    raise ValueError(f"unknown data source {source!r}")


def _on_policy_set(work: Path, scenes: int, seed: int, temperature: float) -> Path:
    """The demo model's candidates on fresh scenes (`llava-o1 judge-data`), judged by itself."""
    from models.demo_weights import DEMO_DIR
    from training.commands import judge_data

    folder = work / f"on-policy-{seed}"
    if not (folder / "verifier.jsonl").exists():
        # The demo model is given by path, so judge-data uses no verifier and no stage instruction.
        judge_data(
            [
                "--model", str(DEMO_DIR), "--out", str(folder), "--n", str(scenes), "--scene-seed", str(seed),
                "--beam-width", "8", "--temperature", str(temperature), "--stage-prompt", "never",
                "--served-model-name", "llava-o1-demo",
            ]
        )  # fmt: skip
    return folder
