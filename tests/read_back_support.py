"""The tiny run the read-back, disk-full and stage-tampering tests copy and damage
(trained once per session by conftest's read_back_run)."""

TRAIN_ARGS = ["--widths", "4,8,8", "--repeats", "1,1,1", "--epochs", "2",
              "--warmup-epochs", "1", "--batch-size", "8", "--lr-max", "0.01",
              "--steps-per-epoch", "2", "--no-shuffle", "--log-every", "0", "--engine", "tf",
              "--targets", "hard"]
