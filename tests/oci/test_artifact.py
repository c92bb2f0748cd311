"""Reading a cache artifact's manifest from a hostile registry (oci.artifact, oci.model).

A table of bad manifests and annotations, each refused with a ValueError that says what is
wrong; then properties (hypothesis, bounded budget): any bytes, any JSON document, and any
annotation values give a checked :class:`Described` or a ValueError, never another error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from venvseal.oci.artifact import (
    ANNOTATION_NAR_HASH,
    ANNOTATION_NAR_SIZE,
    ANNOTATION_PATH,
    ANNOTATION_REFERENCES,
    ARTIFACT_TYPE,
    MAX_REFERENCES,
    NAR_MEDIA_TYPE,
    Described,
    describe,
)
from venvseal.oci.model import json_depth, load_json

SETTINGS = settings(max_examples=100, deadline=None)
BASENAME = "0123456789abcdfghijklmnpqrsvwxyz-app-1.0"
REF = "zyxwvsrqpnmlkjihgfdcba9876543210-app-deps-relinked"
SRI = "sha256-" + "A" * 43 + "="


def manifest(**notes: Any) -> dict[str, Any]:
    base = {ANNOTATION_PATH: BASENAME, ANNOTATION_NAR_HASH: SRI, ANNOTATION_NAR_SIZE: "120",
            ANNOTATION_REFERENCES: REF}
    base.update(notes)
    return {"schemaVersion": 2, "artifactType": ARTIFACT_TYPE,
            "layers": [{"mediaType": NAR_MEDIA_TYPE, "digest": "sha256:" + "a" * 64,
                        "size": 99}],
            "annotations": {k: v for k, v in base.items() if v is not None}}


def test_a_good_manifest_is_described() -> None:
    found = describe(json.dumps(manifest()).encode())
    assert (found.basename, found.nar_size, found.references, found.layer_size) == (
        BASENAME, 120, (REF,), 99)


@pytest.mark.parametrize(("text", "problem"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "nested 5000 levels"),
    (json.dumps(manifest(**{ANNOTATION_NAR_SIZE: "@"})).encode().replace(b'"@"', b"Infinity"),
     "Infinity is not a JSON number"),
    (json.dumps(manifest(**{ANNOTATION_NAR_SIZE: "@"})).encode().replace(b'"@"', b"NaN"),
     "NaN is not a JSON number"),
    (json.dumps(manifest(**{ANNOTATION_NAR_SIZE: "@"})).encode().replace(b'"@"', b"1e400"),
     "out of range"),
    (json.dumps(manifest(**{ANNOTATION_NAR_SIZE: "@"})).encode().replace(b'"@"', b"9" * 5000),
     "digits"),
    (b"\xff\xfe not json", None),
    (b"", None),
])
def test_hostile_json_is_a_value_error(text: bytes, problem: str | None) -> None:
    with pytest.raises(ValueError, match=problem):
        describe(text)


@pytest.mark.parametrize(("notes", "problem"), [
    ({ANNOTATION_NAR_SIZE: 12}, "not text"),
    ({ANNOTATION_NAR_SIZE: "Infinity"}, "is not a size"),
    ({ANNOTATION_NAR_SIZE: "-1"}, "is not a size"),
    ({ANNOTATION_NAR_SIZE: "1.5"}, "is not a size"),
    ({ANNOTATION_NAR_SIZE: "9" * 30}, "is not a size"),
    ({ANNOTATION_NAR_SIZE: None}, "missing"),
    ({ANNOTATION_NAR_HASH: "md5-xyz"}, "nar-hash"),
    ({ANNOTATION_NAR_HASH: ["x"]}, "not text"),
    ({ANNOTATION_PATH: "../../etc"}, "not a store path's basename"),
    ({ANNOTATION_PATH: "x" * 5000}, "not a store path's basename"),
    ({ANNOTATION_REFERENCES: "../x"}, "not a store path's basename"),
    ({ANNOTATION_REFERENCES: f"{REF} {REF}"}, "names a path twice"),
    ({ANNOTATION_REFERENCES: " ".join(f"{i:032d}"[:32].replace("0", "a").replace("e", "f")
                                       + f"-r{i}" for i in range(MAX_REFERENCES + 1))},
     f"more than the {MAX_REFERENCES}"),
])
def test_bad_annotations_are_value_errors(notes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        describe(json.dumps(manifest(**notes)).encode())


@pytest.mark.parametrize(("layer", "problem"), [
    ({"mediaType": NAR_MEDIA_TYPE, "digest": "sha256:" + "a" * 64, "size": -1}, "size"),
    ({"mediaType": NAR_MEDIA_TYPE, "digest": "sha256:" + "a" * 64, "size": True}, "size"),
    ({"mediaType": NAR_MEDIA_TYPE, "digest": "sha256:" + "a" * 64, "size": 1.0}, "size"),
    ({"mediaType": NAR_MEDIA_TYPE, "digest": "sha256:" + "a" * 64, "size": 10**30}, "size"),
    ({"mediaType": NAR_MEDIA_TYPE, "digest": "sha256:../../x", "size": 1}, "digest"),
])
def test_bad_layer_descriptors_are_value_errors(layer: dict[str, Any], problem: str) -> None:
    doc = manifest()
    doc["layers"] = [layer]
    with pytest.raises(ValueError, match=problem):
        describe(json.dumps(doc).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=20)


@SETTINGS
@given(value=json_values)
def test_json_depth_is_the_nesting(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(c) for c in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(c) for c in v.values()), default=0)
        return 0

    text = json.dumps(value).encode()
    assert json_depth(text) == depth(value)
    assert load_json(text, depth=100) == value


def check(data: bytes) -> None:
    try:
        found = describe(data)
    except ValueError:
        return
    assert isinstance(found, Described)
    assert 0 <= found.nar_size < 10**18 and 0 <= found.layer_size < 10**18
    assert all(isinstance(r, str) for r in found.references)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_are_described_or_a_value_error(data: bytes) -> None:
    check(data)


annotation_values = st.one_of(json_values, st.sampled_from(
    [BASENAME, REF, SRI, "120", "-1", "1e9", "Infinity", "", " ", f"{REF} {REF}"]))


@SETTINGS
@given(notes=st.dictionaries(st.sampled_from([ANNOTATION_PATH, ANNOTATION_NAR_HASH,
                                              ANNOTATION_NAR_SIZE, ANNOTATION_REFERENCES]),
                             annotation_values),
       size=json_values, digest=st.one_of(json_values, st.just("sha256:" + "b" * 64)))
def test_any_annotations_are_described_or_a_value_error(notes: dict[str, object],
                                                        size: object, digest: object) -> None:
    doc = manifest(**notes)
    doc["layers"][0].update(size=size, digest=digest)
    check(json.dumps(doc).encode())
