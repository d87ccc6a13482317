//! TODO(issue 22): filled in by the checkpoint work.
