//! TODO(issue 22): filled in by the backfill work.
