"""The imnet64 command line (installed as the package `imnet64_cli`). Parsing and display only."""
import imnet64  # noqa: F401  (Keras 2 before any TensorFlow import in the commands)
