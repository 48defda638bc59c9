//! The integration test binary: one binary keeps link time down. Each module below is one area.

