//! Keeping the mirror complete and proving it right against Stigg's API: the [`backfill`] (every
//! customer, resumable from a [`checkpoint`]) and the scheduled [`drift`] check; [`invocation`]:
//! what the `mirror-sync` function is asked to do.
//!
//! Their own items live in the mirror table under `pk = sync#<job>` (never a customer's
//! `customer#...`), so the job needs no table of its own.

pub mod backfill;
pub mod checkpoint;
pub mod drift;
pub mod invocation;
