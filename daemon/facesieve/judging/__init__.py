"""Judging: from held bytes to a verdict, touching no file. Reading and decoding under a
budget (`images`, `decoder`), the models (`analyzer`, `detectors`, `gender`, `models`),
the pure `policy`, and `judge`, which ties them into one `Judgement` per file."""
