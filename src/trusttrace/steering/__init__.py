"""Steering vectors: the vector, its builders and the hook that applies it; vectors built from a run (the
`vectors` job); other tools' formats."""
