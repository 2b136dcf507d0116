"""Translate human-written dates to ISO 8601 with a Luong-style encoder-decoder.

"tuesday, 3 march 2020", "03/03/20" and "march 3, 2020" all become
"2020-03-03". The model follows Luong, Pham & Manning (2015), one character at
a time:

- encoder: character embedding (`mask_zero=True`) and a bidirectional GRU
  over the input;
- decoder: a GRU over the previous output characters (teacher forcing in
  training), started from the encoder's last state;
- global attention: each decoder state h_t attends over the encoder states
  with `LuongAttention([decoder_states, encoder_states], mask=[None, enc_mask])`
  (the padding mask keeps padded input positions out), giving the context c_t;
- the attentional hidden state h~_t = tanh(W_c [c_t; h_t]) feeds the softmax
  over the next character.

After training, greedy decoding translates held-out dates and the script
prints the exact-match accuracy, then draws the attention weights of a few
inputs (the alignment figure of the paper) to a PNG. The figure and a JSON
summary (`seq2seq_dates.json`: accuracy, wall time, arguments) go to
`--output-dir` (default `examples/output/`, not tracked by git).

    KERAS_BACKEND=jax python examples/seq2seq_dates.py   # writes examples/output/dates_attention.png
"""

import argparse
import datetime
import json
import os
import time
from pathlib import Path

# TensorFlow's C++ INFO/WARNING lines; set before keras imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from luong_attention import LuongAttention  # noqa: E402

MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Every format names the date without ambiguity: numeric dates are day first,
# and two-digit years mean 1950-2049.
FORMATS = [
    lambda d: f"{DAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{d.day}/{d.month}/{d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{DAYS[d.weekday()][:3]} {MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]}. {ordinal(d.day)} '{d.year % 100:02d}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
]

INPUT_CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 ,./'"))
OUTPUT_CHARS = sorted(set("0123456789-"))
PAD, START = 0, 1  # output ids: 0 pads (unused), 1 starts decoding
IN_IDS = {c: i + 1 for i, c in enumerate(INPUT_CHARS)}  # 0 pads
OUT_IDS = {c: i + 2 for i, c in enumerate(OUTPUT_CHARS)}
OUT_CHARS = {i: c for c, i in OUT_IDS.items()}
IN_LEN, OUT_LEN = 32, 10  # "2020-03-03" is 10 characters


def make_dates(n, rng):
    """`n` pairs of (human-written date, ISO date) between 1950 and 2049."""
    first, last = datetime.date(1950, 1, 1).toordinal(), datetime.date(2049, 12, 31).toordinal()
    pairs = []
    for _ in range(n):
        date = datetime.date.fromordinal(int(rng.integers(first, last + 1)))
        human = FORMATS[int(rng.integers(len(FORMATS)))](date)
        pairs.append((human, date.isoformat()))
    return pairs


def encode(pairs):
    """Token arrays: encoder input, decoder input (shifted), decoder target."""
    enc = np.zeros((len(pairs), IN_LEN), "int32")
    target = np.zeros((len(pairs), OUT_LEN), "int32")
    for i, (human, iso) in enumerate(pairs):
        enc[i, : len(human)] = [IN_IDS[c] for c in human]
        target[i] = [OUT_IDS[c] for c in iso]
    dec = np.concatenate([np.full((len(pairs), 1), START, "int32"), target[:, :-1]], axis=1)
    return enc, dec, target


def build_models(units=32, embed_dim=32, attention=None):
    """The training model (teacher forcing) and the same graph also returning
    the attention weights. `attention`: the attention layer (default
    `LuongAttention(score_mode="general")`; benchmarks/grid.py passes others)."""
    if attention is None:
        attention = LuongAttention(score_mode="general")
    enc_tokens = keras.Input(shape=(None,), dtype="int32", name="encoder_tokens")
    dec_tokens = keras.Input(shape=(None,), dtype="int32", name="decoder_tokens")
    enc_mask = ops.not_equal(enc_tokens, 0)

    enc_embedded = keras.layers.Embedding(len(IN_IDS) + 1, embed_dim, mask_zero=True)(enc_tokens)
    # Bidirectional, so the state at "3" in "3/1/1986" already knows that a
    # "/" follows (day 3, not the first digit of day 30).
    encoder_states, forward_last, backward_last = keras.layers.Bidirectional(
        keras.layers.GRU(units, return_sequences=True, return_state=True)
    )(enc_embedded)
    encoder_last = keras.layers.Concatenate()([forward_last, backward_last])

    dec_embedded = keras.layers.Embedding(len(OUT_IDS) + 2, embed_dim)(dec_tokens)
    decoder_states = keras.layers.GRU(2 * units, return_sequences=True)(
        dec_embedded, initial_state=encoder_last
    )

    context, weights = attention(
        [decoder_states, encoder_states],
        mask=[None, enc_mask],
        return_attention_scores=True,
    )
    attentional = keras.layers.Dense(units, activation="tanh", name="attentional_state")(
        keras.layers.Concatenate()([context, decoder_states])
    )
    logits = keras.layers.Dense(len(OUT_IDS) + 2, name="logits")(attentional)

    model = keras.Model([enc_tokens, dec_tokens], logits)
    with_weights = keras.Model([enc_tokens, dec_tokens], [logits, weights])
    return model, with_weights


def greedy_decode(with_weights, enc, batch_size=1024):
    """Greedy decoding: feed back the most likely character at each step.

    Returns the ISO strings and the attention weights `(n, OUT_LEN, IN_LEN)`.
    """
    dec = np.zeros((len(enc), OUT_LEN), "int32")
    dec[:, 0] = START
    for t in range(OUT_LEN):
        logits, weights = with_weights.predict([enc, dec], batch_size=batch_size, verbose=0)
        step = np.argmax(logits[:, t], axis=-1)
        if t + 1 < OUT_LEN:
            dec[:, t + 1] = step
    # After the last step, `dec[:, 1:]` and `step` hold the whole greedy output.
    ids = np.concatenate([dec[:, 1:], step[:, None]], axis=1)
    texts = ["".join(OUT_CHARS.get(int(i), "?") for i in row) for row in ids]
    return texts, np.asarray(weights)


def plot_attention(pairs, weights, path):
    """Draws one alignment matrix (output characters x input characters) per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.axis("off")
    for ax, (human, iso), w in zip(axes.flat, pairs, weights, strict=False):
        ax.imshow(w[:, : len(human)], cmap="gray_r", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(human)), [c if c != " " else "\u2423" for c in human])
        ax.set_yticks(range(len(iso)), list(iso))
        ax.tick_params(labelsize=8, length=0)
        ax.set_title(f"{human}  \u2192  {iso}", fontsize=9)
    fig.suptitle(
        f"LuongAttention alignments (rows: output, columns: input), "
        f"{keras.backend.backend()} backend",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10000, help="training dates")
    parser.add_argument("--test-samples", type=int, default=2000, help="held-out dates")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=32, help="encoder GRU width per direction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity (0, 1 or 2)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(__file__).with_name("output"),
        help="folder for dates_attention.png and seq2seq_dates.json (default: examples/output)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_pairs = make_dates(args.samples, rng)
    seen = {human for human, _ in train_pairs}
    test_pairs = [p for p in make_dates(args.test_samples * 2, rng) if p[0] not in seen]
    test_pairs = test_pairs[: args.test_samples]  # held out: no input seen in training
    enc, dec, target = encode(train_pairs)

    model, with_weights = build_models(units=args.units)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        [enc, dec],
        target,
        validation_split=0.1,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )

    test_enc, _, _ = encode(test_pairs)
    predicted, weights = greedy_decode(with_weights, test_enc)
    accuracy = np.mean([p == iso for p, (_, iso) in zip(predicted, test_pairs, strict=True)])
    for (human, iso), p in list(zip(test_pairs, predicted, strict=True))[:5]:
        print(f"  {human!r:>32} -> {p}  {'ok' if p == iso else 'expected ' + iso}")
    print(
        f"exact match, greedy decoding, {len(test_pairs)} held-out dates "
        f"({keras.backend.backend()}): {accuracy:.1%}"
    )

    shown = ["tuesday, 3 march 2020", "03/03/20", "march 3, 2020", "the 21st of july, 1969"]
    shown_enc, _, _ = encode([(human, "0000-00-00") for human in shown])
    shown_iso, shown_weights = greedy_decode(with_weights, shown_enc)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figure = args.output_dir / "dates_attention.png"
    plot_attention(list(zip(shown, shown_iso, strict=True)), shown_weights, figure)
    print(f"attention heatmap written to {figure}")
    summary = {
        "script": "seq2seq_dates.py",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "metric": "exact match, greedy decoding",
        "accuracy": float(accuracy),
        "test_samples": len(test_pairs),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "args": {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose")},
    }
    (args.output_dir / "seq2seq_dates.json").write_text(json.dumps(summary, indent=2) + "\n")
    return accuracy


if __name__ == "__main__":
    main()
