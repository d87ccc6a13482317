//! TODO(issue 22): filled in by the drift work.
