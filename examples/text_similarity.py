"""Sentence-pair similarity with a CNN and LuongAttention.

The model is the query-value attention example of the `tf.keras.layers.Attention`
reference docs: a shared embedding and Conv1D encode both sentences, the query
sentence attends over the other one with `LuongAttention([query, value])`, both
sequences are average-pooled, concatenated and classified by a small dense
head. Only the attention layer is swapped.

The data are generated here, no download: pairs of short sentences about who
did what to whom. A pair is a paraphrase (label 1) when the second sentence says
the same thing in other words (synonyms, active or passive voice); otherwise
(label 0) one of subject, verb or object means something else. Half the pairs
are paraphrases, so chance is 50%. A JSON summary (`text_similarity.json`:
accuracy, wall time, arguments) goes to `--output-dir` (default
`examples/output/`, not tracked by git).

    KERAS_BACKEND=jax python examples/text_similarity.py   # or torch, tensorflow
"""

import argparse
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

# Each inner list is one concept; its words are interchangeable.
SUBJECTS = [
    ["teacher", "tutor"],
    ["doctor", "physician"],
    ["child", "kid"],
    ["chef", "cook"],
    ["lawyer", "attorney"],
    ["boss", "manager"],
    ["sailor", "seaman"],
    ["farmer", "grower"],
]
VERBS = [  # (active forms, passive participles)
    (["bought", "purchased"], ["bought", "purchased"]),
    (["fixed", "repaired"], ["fixed", "repaired"]),
    (["found", "discovered"], ["found", "discovered"]),
    (["wrecked", "destroyed"], ["wrecked", "destroyed"]),
    (["sold", "traded"], ["sold", "traded"]),
    (["painted", "coloured"], ["painted", "coloured"]),
]
OBJECTS = [
    ["car", "automobile"],
    ["boat", "ship"],
    ["house", "home"],
    ["picture", "photo"],
    ["couch", "sofa"],
    ["gift", "present"],
    ["phone", "mobile"],
    ["bike", "bicycle"],
]
ADJECTIVES = ["old", "young", "tall", "kind", "busy", "quiet"]
FILLERS = ["yesterday", "today", "again", "quickly", "finally", "", "", ""]


def build_vocabulary():
    words = {"the", "was", "by", *ADJECTIVES, *filter(None, FILLERS)}
    for group in SUBJECTS + OBJECTS:
        words.update(group)
    for active, passive in VERBS:
        words.update(active + passive)
    return {word: i + 1 for i, word in enumerate(sorted(words))}  # 0 pads


def sentence(rng, subject, verb, obj):
    """One random wording of `subject verb obj`."""
    subj_word = rng.choice(SUBJECTS[subject])
    obj_word = rng.choice(OBJECTS[obj])
    adjective = [rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []
    filler = [w for w in [rng.choice(FILLERS)] if w]
    if rng.random() < 0.5:
        words = ["the", *adjective, subj_word, rng.choice(VERBS[verb][0]), "the", obj_word]
    else:
        words = ["the", obj_word, "was", rng.choice(VERBS[verb][1]), "by", "the"]
        words += [*adjective, subj_word]
    return words + filler if rng.random() < 0.5 else filler + words


def make_pairs(n, rng, vocabulary, length):
    """`n` pairs of token arrays `(n, length)` and 0/1 labels."""
    first = np.zeros((n, length), "int32")
    second = np.zeros((n, length), "int32")
    labels = rng.integers(0, 2, size=n).astype("float32")
    sizes = (len(SUBJECTS), len(VERBS), len(OBJECTS))
    for i in range(n):
        meaning = [int(rng.integers(s)) for s in sizes]
        other = list(meaning)
        if not labels[i]:
            slot = int(rng.integers(3))  # change subject, verb or object
            other[slot] = (other[slot] + int(rng.integers(1, sizes[slot]))) % sizes[slot]
        for row, (s, v, o) in ((first, meaning), (second, other)):
            tokens = [vocabulary[w] for w in sentence(rng, s, v, o)]
            row[i, : len(tokens)] = tokens
    return first, second, labels


def build_model(vocab_size, embed_dim=32, filters=64, attention=None):
    """The CNN + attention model of the tf.keras.layers.Attention docs.
    `attention`: the attention layer (default `LuongAttention(use_scale=True)`;
    benchmarks/grid.py passes others)."""
    if attention is None:
        attention = LuongAttention(use_scale=True)
    query_input = keras.Input(shape=(None,), dtype="int32", name="query")
    value_input = keras.Input(shape=(None,), dtype="int32", name="value")
    query_mask = ops.not_equal(query_input, 0)
    value_mask = ops.not_equal(value_input, 0)

    token_embedding = keras.layers.Embedding(vocab_size, embed_dim)
    cnn_layer = keras.layers.Conv1D(filters, kernel_size=3, padding="same", activation="relu")
    query_seq_encoding = cnn_layer(token_embedding(query_input))
    value_seq_encoding = cnn_layer(token_embedding(value_input))

    # (batch_size, Tq, filters): each query word's view of the other sentence.
    query_value_attention_seq = attention(
        [query_seq_encoding, value_seq_encoding], mask=[query_mask, value_mask]
    )

    pooling = keras.layers.GlobalAveragePooling1D()
    query_encoding = pooling(query_seq_encoding, mask=query_mask)
    query_value_attention = pooling(query_value_attention_seq, mask=query_mask)

    features = keras.layers.Concatenate()([query_encoding, query_value_attention])
    hidden = keras.layers.Dense(64, activation="relu")(features)
    output = keras.layers.Dense(1, activation="sigmoid")(hidden)
    return keras.Model([query_input, value_input], output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20000, help="training pairs")
    parser.add_argument("--test-samples", type=int, default=2000, help="held-out pairs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity (0, 1 or 2)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(__file__).with_name("output"),
        help="folder for text_similarity.json (default: examples/output)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vocabulary = build_vocabulary()
    length = 12
    train = make_pairs(args.samples, rng, vocabulary, length)
    test = make_pairs(args.test_samples, rng, vocabulary, length)

    model = build_model(len(vocabulary) + 1)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        [train[0], train[1]],
        train[2],
        validation_split=0.1,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    _, accuracy = model.evaluate([test[0], test[1]], test[2], verbose=0)
    print(
        f"held-out accuracy on {args.test_samples} pairs ({keras.backend.backend()}): "
        f"{accuracy:.1%} (chance: 50%)"
    )
    summary = {
        "script": "text_similarity.py",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "metric": "accuracy",
        "accuracy": float(accuracy),
        "test_samples": args.test_samples,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "args": {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose")},
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "text_similarity.json").write_text(json.dumps(summary, indent=2) + "\n")
    return accuracy


if __name__ == "__main__":
    main()
