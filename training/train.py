"""`llava-o1 train`: supervised fine-tuning on LLaVA-o1-100k-format records (training/synthetic_data.py),
loss on the assistant's tokens only.

A plain PyTorch loop (AdamW), sized for tiny models on a CPU: a step and/or time budget, a progress
bar, checkpoints (model, processor, optimizer, step) in OUT/checkpoint-STEP, `--resume` from the
latest one, and the final model in OUT, loadable by both engines. On GPUs, the same records go
through the usual transformers/accelerate path (docs/data.md); this loop does not shard.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from training.records import IMAGE_MARK, ROLES

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class Example:
    """One record: its image, and its turns as (role, text); the last turn is the assistant's target.

    Answer records have two turns (question, staged answer); judge and verifier records four
    (question, the answer so far, the judge's question, the verdict). A drill (text only) may name
    the character spans to learn instead, in any assistant turns (`targets`: turn index, start,
    end); otherwise all of the last turn is learnt."""

    image: Path | None
    turns: list[tuple[str, str]]
    targets: list[tuple[int, int, int]] | None = None
    group: str | None = None  # examples of one group are drawn into the same batch (see `draw`)


def read_records(paths: str | Path | Sequence[str | Path]) -> list[Example]:
    """Records of one or more .jsonl files; image paths are relative to each file's folder."""
    examples = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(path)
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            turns = [(ROLES[t["from"]], t["value"]) for t in record["conversations"]]
            if turns[-1][0] != "assistant":
                raise ValueError(f"{path}: record {record.get('id')} does not end with an assistant turn")
            image = path.parent / record["image"] if record.get("image") else None
            targets = [(int(t), int(a), int(b)) for t, a, b in record["targets"]] if record.get("targets") else None
            if targets and image:
                raise ValueError(f"{path}: record {record.get('id')} has targets and an image; targets are for text")
            group = f"{path}#{record['group']}" if record.get("group") else None  # groups are per file
            examples.append(Example(image, turns, targets, group))
    return examples


class Collator:
    """Turns examples into a padded batch whose labels cover the last assistant turn only."""

    def __init__(self, processor: ProcessorMixin):
        self.processor = processor
        self.tokenizer = cast("PreTrainedTokenizerBase", getattr(processor, "tokenizer", processor))
        self.tokenizer.padding_side = "right"

    def conversation(self, example: Example, with_answer: bool) -> str:
        """The chat text, as the engine renders it (models/chat_template.py): the image part stands
        where "<image>" was, before the turn's text; without the answer, it ends with the
        assistant's header (the generation prompt)."""
        turns = example.turns if with_answer else example.turns[:-1]
        messages: list[dict[str, Any]] = []
        for role, text in turns:
            images = text.count(IMAGE_MARK) if example.image else 0
            body = text.replace(IMAGE_MARK, "").strip() if images else text
            messages.append({"role": role, "content": [{"type": "image"}] * images + [{"type": "text", "text": body}]})
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=not with_answer)
        assert isinstance(text, str)
        return text

    def __call__(self, examples: list[Example]) -> dict:
        from PIL import Image

        # One list per example, empty for a text-only one (drills): the processor pads those.
        images = [[Image.open(e.image).convert("RGB")] * _image_count(e) if e.image else [] for e in examples]
        full = [self.conversation(e, True) for e in examples]
        prompts = [self.conversation(e, False) for e in examples]
        kwargs = {"images": images} if any(images) else {}
        batch = self.processor(text=full, padding=True, return_tensors="pt", add_special_tokens=False, **kwargs)
        prompt_ids = self.processor(
            text=prompts, padding=True, return_tensors="pt", add_special_tokens=False, **kwargs
        )["input_ids"]
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        for row, example in enumerate(examples):
            if example.targets is not None:
                keep = self._target_tokens(full[row], example)
                for position in range(int(batch["attention_mask"][row].sum())):
                    if position not in keep:
                        labels[row, position] = -100
                continue
            # The prompt (with the assistant's header) is a prefix of the full text: mask it out.
            prompt_len = int((prompt_ids[row] != self.tokenizer.pad_token_id).sum())
            labels[row, :prompt_len] = -100
        batch["labels"] = labels
        return dict(batch)

    def _target_tokens(self, full: str, example: Example) -> set[int]:
        """Token positions (text-only example) whose characters meet its target spans, each span in
        an assistant turn, found in the rendered text after the turns before it."""
        spans = []
        for turn, a, b in example.targets or ():
            before = Example(None, [*example.turns[:turn], ("assistant", "")]) if turn else None
            start = len(self.conversation(before, False)) if before else 0
            at = full.index(example.turns[turn][1], start)
            spans.append((at + a, at + b))
        offsets = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return {
            position
            for position, (a, b) in enumerate(offsets)
            if b > a and any(a < hi and lo < b for lo, hi in spans)  # " yes" carries its space
        }


class BatchDrawer:
    """Draws training batches at random, without repeats within a batch. Examples that name a group
    come into a batch together (a batch may then run over its size by less than a group): a
    verifier learns far sooner from a right and a wrong candidate of one context side by side,
    where nothing but the candidate tells them apart, than from either alone (docs/data.md)."""

    def __init__(self, examples: Sequence[Example]):
        self._examples = list(examples)
        groups: dict[str, list[Example]] = {}
        self._units: list[list[Example]] = []
        for example in examples:
            if example.group is None:
                self._units.append([example])
            else:
                groups.setdefault(example.group, []).append(example)
        self._units += groups.values()
        self._grouped = bool(groups)

    def draw(self, rng: random.Random, batch_size: int) -> list[Example]:
        if not self._grouped:
            return rng.sample(self._examples, min(batch_size, len(self._examples)))
        batch: list[Example] = []
        for unit in rng.sample(self._units, min(batch_size, len(self._units))):
            if len(batch) >= batch_size:
                break
            batch += unit
        return batch


def _image_count(example: Example) -> int:
    return sum(text.count(IMAGE_MARK) for _, text in example.turns) if example.image else 0


def train(
    model_dir: str,
    data: str | Sequence[str],
    out: str,
    *,
    steps: int | None = None,
    max_minutes: float | None = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    save_every: int = 100,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    loss_average: str = "token",
    warmup_steps: int = 0,
) -> dict:
    """Fine-tune `model_dir` on `data`; returns {"steps", "first_loss", "last_loss", "seconds"}.
    With `warmup_steps`, the learning rate rises linearly to `lr` over the first ones."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if steps is None and max_minutes is None:
        raise ValueError("give a step budget, a time budget, or both")
    out_dir = Path(out)
    start_dir, start_step = Path(model_dir), 0
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        start_dir, start_step = checkpoint, int(checkpoint.name.removeprefix(CHECKPOINT_PREFIX))
    model = AutoModelForImageTextToText.from_pretrained(start_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(start_dir)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    if checkpoint is not None and (checkpoint / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt"))
    examples = read_records(data)
    drawer = BatchDrawer(examples)
    collate = Collator(processor)
    rng = random.Random(seed * 1_000_003 + start_step)
    torch.manual_seed(seed + start_step)
    deadline = time.monotonic() + max_minutes * 60 if max_minutes is not None else None
    total = steps if steps is not None else None
    bar = tqdm(total=total, initial=start_step, desc="train", unit="step", disable=not progress)
    first_loss = last_loss = None
    step, started = start_step, time.monotonic()
    while (steps is None or step < steps) and (deadline is None or time.monotonic() < deadline):
        batch = collate(drawer.draw(rng, batch_size))
        loss = example_mean_loss(model, batch) if loss_average == "example" else model(**batch).loss
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        last_loss = loss.item()
        first_loss = last_loss if first_loss is None else first_loss
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.3f}")
        if save_every and step % save_every == 0:
            save_checkpoint(model, processor, optimizer, out_dir, step)
    bar.close()
    if steps is not None and step < steps and save_every and step > start_step:
        save_checkpoint(model, processor, optimizer, out_dir, step)  # stopped by the clock: resume from here
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    summary = {
        "steps": step,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "seconds": round(time.monotonic() - started, 1),
        "data": data if isinstance(data, str) else list(data),
        "from": str(model_dir),
        "loss_average": loss_average,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def example_mean_loss(model: PreTrainedModel, batch: dict) -> torch.Tensor:
    """Cross-entropy averaged over each example's target tokens, then over the examples
    (`--loss-average example`).

    The default, the model's own `.loss`, averages over all the batch's target tokens at once: a
    judge record's target is a verdict of three tokens beside answers of about eighty, so that
    gives judging about 2% of the gradient even when a third of the records are judge turns.
    Per example, each record counts once."""
    import torch

    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    targets = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=-100, reduction="none"
    )
    mask = (targets != -100).float()
    per_example = (losses * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_example[mask.sum(dim=1) > 0].mean()


def save_checkpoint(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    optimizer: torch.optim.Optimizer,
    out_dir: Path,
    step: int,
    keep: int = 2,
) -> Path:
    import torch

    path = out_dir / f"{CHECKPOINT_PREFIX}{step}"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    for old in sorted(out_dir.glob(f"{CHECKPOINT_PREFIX}*"), key=_step_of)[:-keep]:
        shutil.rmtree(old)
    return path


def latest_checkpoint(out_dir: Path) -> Path | None:
    checkpoints = sorted(out_dir.glob(f"{CHECKPOINT_PREFIX}*"), key=_step_of)
    return checkpoints[-1] if checkpoints else None


def _step_of(path: Path) -> int:
    return int(path.name.removeprefix(CHECKPOINT_PREFIX))
