//! What the functions' executables take from the system's shared libraries.
//!
//! The one symbol any of them took from `libm.so.6` was `pow`: aws-smithy-runtime's adaptive
//! retry rate limiter takes a cube root with `f64::powf` (our clients use standard retries, so it
//! never runs). For that one reference the dynamic loader mapped and relocated all of libm at
//! every cold start: about 300 kB resident at the first `GET /next` (`make profile-rss`), a twentieth
//! of the receiver's RSS after init. Defined here, `pow` resolves inside the executable, and the
//! linker's `--as-needed` (rustc's default for Linux targets) leaves libm out of `DT_NEEDED`.
//! `scripts/check-linked-libraries.sh` (in `tests/production.rs`, `make build`, `make deploy` and
//! `make bench`) fails when a dependency starts calling another libm function, so libm does not
//! come back unnoticed.

/// C's `pow`, from the `libm` crate (rust-lang's pure-Rust libm; this function is FreeBSD's
/// `e_pow.c`, nearly correctly rounded). Unlike glibc's it never sets `errno`, which no Rust
/// caller reads.
///
/// Exported under C's name, so that the calls the compiler emits for `f64::powf` bind to it (the
/// executable also exports it dynamically, so a library loaded later would bind to it too; none
/// of the three it loads calls `pow`). Not `f64::powf` in its body: that would be a call to this
/// function itself.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pow_follows_c_on_the_cases_the_rate_limiter_and_others_meet() {
        assert!((super::pow(8.0, 1.0 / 3.0) - 2.0).abs() < 1e-15);
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(0.0, 0.0), 1.0);
        assert_eq!(super::pow(-2.0, 3.0), -8.0);
        assert!(super::pow(-8.0, 1.0 / 3.0).is_nan());
        assert_eq!(super::pow(f64::INFINITY, -1.0), 0.0);
        assert!(super::pow(f64::NAN, 1.0).is_nan());
        assert_eq!(super::pow(f64::NAN, 0.0), 1.0);
    }
}
