"""Per-epoch numbers read back from RecBole's run logs (for learning-curve plots)."""

import re

TRAINING = re.compile(r"epoch (\d+) training \[time: [\d.]+s, train loss: ([\d.]+)\]")
EVALUATION = re.compile(r"epoch (\d+) evaluating \[time: [\d.]+s, valid_score: ([\d.]+)\]")


def _pairs(pattern, log_path):
    with open(log_path, encoding="utf-8") as f:
        return [(int(m.group(1)) + 1, float(m.group(2))) for m in pattern.finditer(f.read())]


def train_losses(log_path):
    """(epoch, summed training loss) pairs, epochs counted from 1."""
    return _pairs(TRAINING, log_path)


def valid_curve(log_path):
    """(epoch, valid score) pairs, epochs counted from 1."""
    return _pairs(EVALUATION, log_path)
