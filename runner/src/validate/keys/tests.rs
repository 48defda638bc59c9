//! Unit tests of key hashing, spilling and merging.
