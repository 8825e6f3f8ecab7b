"""Fine-tune an extractive QA reader on SQuAD v2.0-format data (`qa train-reader`).

Standard SQuAD preprocessing: question + context in stride windows; the answer is mapped to
token positions through the fast tokenizer's offsets; windows that miss the answer and
unanswerable questions point at position 0 (CLS). Besides SQuAD's own unanswerable questions,
a share of answerable questions is paired with another paragraph of the same article that does
not hold the answer, labelled no-answer: the assistant reads several retrieved chunks and
usually only one holds the answer, so the reader must learn to say "not here" to the others.

Built for 2 CPU cores and ~100k questions:
- features live in flat numpy arrays (token ids as uint16), not Python lists, so memory stays
  at a few hundred MB whatever the data size, and they are cached beside the run for --resume;
- eager attention under bf16 autocast (measured 0.43 s a step against 0.63 s for SDPA);
- `--time-budget` plans the learning-rate schedule from the measured step time, so the run
  decays to zero and validates before the budget ends; a checkpoint every ~10 minutes and
  `--resume` continue an interrupted run exactly where it stopped.

Validation articles are split off by article, never trained on, and used to pick the best
checkpoint, the null threshold and the score calibration, all saved with the model in
qa_reader.json.

The rooms:
- `config`: `TrainConfig`, what a run is asked to do (its window defaults are the reader's);
- `data`: SQuAD questions split by article, and the (question, paragraph, label) pairs;
- `features`: the pairs tokenized into flat arrays, cached, and batched by length;
- `schedule`: the learning-rate plan, refitted to a time budget;
- `checkpoints`: the run's checkpoint (`--resume`) and the saved float16 reader;
- `validation`: scoring on the validation articles, choosing the null threshold and calibration
  (the choice itself is `qa.calibration`'s), and calibrating the saved reader at the end;
- `trainer`: `Trainer`, the loop over an explicit `RunState`, and `train_reader`.
"""
