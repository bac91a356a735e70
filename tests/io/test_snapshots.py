"""Snapshot signatures: typed manifests still match the string-valued ones older runs wrote."""

from beam_e5.io.snapshots import same_signature


def test_typed_signature_matches_its_pre_0_2_string_form():
    current = {"model": "m", "dim": 384, "profile.max_length": 512, "profile.instruction": None}
    old = {"model": "m", "dim": "384", "profile.max_length": "512", "profile.instruction": "None"}
    assert same_signature(current, current)
    assert same_signature(old, current)


def test_any_changed_field_is_a_different_signature():
    current = {"model": "m", "dim": 384}
    assert not same_signature({"model": "m", "dim": 768}, current)
    assert not same_signature({"model": "m"}, current)
    assert not same_signature(None, current)
    assert not same_signature("m", current)
