"""Trains a small model holding LuongAttention; tests/test_resume.py runs it.

    python train_resume.py OUT.npz --backup DIR [--save-freq N] [--kill-at EPOCH BATCH]
    python train_resume.py OUT.npz --replay-batches N

Deterministic on CPU: fixed seeds, shuffle=False. `--kill-at` kills this
process with SIGKILL after the given batch (both 0-based) of the given epoch;
started again with the same `--backup`, `keras.callbacks.BackupAndRestore`
resumes from what it saved. `--replay-batches N` trains the way Keras 3.15
resumes from a checkpoint taken after batch N-1 of epoch 1 (the second): one
epoch, the first N batches of the second, then epochs 2 and 3 in full.
The final weights are written to OUT.npz.
"""

import argparse
import os
import signal

import keras
import numpy as np

from luong_attention import LuongAttention

EPOCHS, SAMPLES, BATCH_SIZE, LENGTH, DIM = 3, 64, 8, 6, 8


def make_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, LENGTH, DIM)).astype("float32")
    lengths = rng.integers(2, LENGTH + 1, size=SAMPLES)
    x[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0.0
    y = x.sum(axis=(1, 2))[:, None].astype("float32") / 4
    return x, y


def build_model():
    inputs = keras.Input((LENGTH, DIM))
    x = keras.layers.Masking()(inputs)
    x = keras.layers.Dense(DIM)(x)
    x = LuongAttention(use_scale=True, score_mode="general", causal=True)([x, x])
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.kill_epoch, self.kill_batch, self.epoch = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.kill_epoch, self.kill_batch):
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--backup")
    parser.add_argument("--save-freq", default="epoch")
    parser.add_argument("--kill-at", type=int, nargs=2, metavar=("EPOCH", "BATCH"))
    parser.add_argument("--replay-batches", type=int)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x, y = make_data()
    model = build_model()
    fit = dict(batch_size=BATCH_SIZE, shuffle=False, verbose=0)
    if args.replay_batches is not None:
        model.fit(x, y, epochs=1, **fit)
        n = args.replay_batches * BATCH_SIZE
        model.fit(x[:n], y[:n], epochs=1, **fit)
        model.fit(x, y, epochs=EPOCHS, initial_epoch=1, **fit)
    else:
        callbacks = []
        if args.backup:
            save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)
            callbacks.append(keras.callbacks.BackupAndRestore(args.backup, save_freq=save_freq))
        if args.kill_at:
            callbacks.append(KillAt(*args.kill_at))
        model.fit(x, y, epochs=EPOCHS, callbacks=callbacks, **fit)
    np.savez(args.out, *[keras.ops.convert_to_numpy(w) for w in model.weights])


if __name__ == "__main__":
    main()
