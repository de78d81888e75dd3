"""Export a Keras classifier as a SavedModel with TF Hub's "reusable SavedModel" interface.

What hub.load / hub.KerasLayer expect of such a model: a tf.function ``__call__(images)``
plus ``variables``, ``trainable_variables`` and ``regularization_losses`` as plain
attributes. A ``serving_default`` signature returning ``{"logits": ...}`` is added for TF
Serving and saved_model_cli.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf


class HubStyleModule(tf.__internal__.tracking.AutoTrackable):
    # AutoTrackable rather than tf.Module: tf.Module's read-only `variables` property would
    # block the plain attribute TF Hub looks for.
    def __init__(self, model: tf.keras.Model):
        self._model = model
        self.variables = list(model.variables)
        self.trainable_variables = list(model.trainable_variables)
        self.regularization_losses = []
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="images")
        self.__call__ = tf.function(self._logits, input_signature=[spec])
        self.serving = tf.function(lambda images: {"logits": self._logits(images)},
                                   input_signature=[spec])

    def _logits(self, images: tf.Tensor) -> tf.Tensor:
        return self._model(images, training=False)


def export_hub_style_saved_model(model: tf.keras.Model, out_dir: str | Path) -> None:
    module = HubStyleModule(model)
    tf.saved_model.save(module, str(out_dir),
                        signatures={"serving_default": module.serving.get_concrete_function()})
