"""The reliability matrix: crashes, API faults, sink faults, late revisions, overlap, secrets, bad input."""
