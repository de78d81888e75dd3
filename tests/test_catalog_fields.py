"""shard-records' lean catalog parse reads the same fields as the full parse (issue 23)."""

from imnet64.formats.tfrecord_schema import (
    LabeledImage,
    catalog_fields,
    parse_labeled,
    serialize_labeled,
)

import pytest


@pytest.mark.parametrize("truth", [None, 0, 282])
def test_catalog_fields_equal_the_full_parse(truth) -> None:
    item = LabeledImage(encoded=b"\x89PNG" + bytes(range(200)), image_format="png", height=64,
                        width=64, filename="train_data_batch_3/000123\udcff", label=283,
                        class_name="Persian cat", confidence=0.8125,
                        topk_ids=(283, 282, 286, 288, 290),
                        topk_probs=(0.8125, 0.1, 0.05, 0.02, 0.01), truth=truth)
    full = parse_labeled(serialize_labeled(item))
    assert catalog_fields(serialize_labeled(item)) == (
        full.filename, full.label, full.class_name, full.confidence, len(full.encoded),
        -1 if full.truth is None else full.truth)
    assert catalog_fields(serialize_labeled(item))[4] == 204  # the image's bytes, not the record's
