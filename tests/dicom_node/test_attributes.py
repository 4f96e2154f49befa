"""The study and series records carry exactly pydicom's DICOM JSON of their attributes."""

from __future__ import annotations

import orjson
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicom_node.attributes import SERIES_KEYS, STUDY_KEYS, index_instance


def converted(ds: Dataset, keywords: tuple[str, ...]) -> dict:
    subset = Dataset()
    for keyword in keywords:
        if keyword in ds:
            subset[keyword] = ds[keyword]
    return subset.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _: "")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_level_records_are_parts_of_the_one_conversion(name: str) -> None:
    ds = dcmread(get_testdata_file(name))
    indexed = index_instance(ds, str(ds.file_meta.TransferSyntaxUID), 1)
    assert orjson.loads(indexed.study.body) == converted(ds, STUDY_KEYS)
    assert orjson.loads(indexed.series.body) == converted(ds, ("StudyInstanceUID", *SERIES_KEYS))
    assert list(orjson.loads(indexed.study.body)) == sorted(orjson.loads(indexed.study.body))  # tag order
