"""The reference photos themselves (README "Reference audit"): another person, no face, a tiny face or a
duplicate among `[person] references` fails here, before any checkpoint is blamed for a weak likeness."""


def test_reference_photos(lora_reference_audit):
    lora_reference_audit.assert_clean()
