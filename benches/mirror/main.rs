//! `make bench-mirror` (also part of `make bench`): the entitlement mirror against moto, in a
//! release build. `check` latency, the client's CPU and the read units per check, the DynamoDB
//! calls each kind of event costs, what the largest snapshot the queue carries (3,000 features)
//! costs to write, and the item sizes. Writes its section of BENCHMARKS.md (between the mirror
//! markers, inside the part `make bench` keeps).
//!
//! Latency includes moto (a Python emulator, far slower than DynamoDB): it bounds what the code
//! adds. CPU is this process's own (getrusage), so it does not depend on moto's speed.

#[allow(unused_imports)]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::time::Duration;

pub const CHECKS: usize = 1000;
const BEGIN: &str = "<!-- mirror: written by `make bench-mirror` -->";
const END: &str = "<!-- /mirror -->";

pub fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (ticks of 1/100 s are too coarse: use rusage).
    let mut usage = std::mem::MaybeUninit::<libc_rusage>::zeroed();
    unsafe { getrusage(0, usage.as_mut_ptr()) };
    let u = unsafe { usage.assume_init() };
    (u.utime_sec + u.stime_sec) as f64 + (u.utime_usec + u.stime_usec) as f64 / 1e6
}

#[repr(C)]
struct libc_rusage {
    utime_sec: i64,
    utime_usec: i64,
    stime_sec: i64,
    stime_usec: i64,
    rest: [i64; 14],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut libc_rusage) -> i32;
}

pub fn iso(ms: i64) -> String {
    stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A fresh mirror table; `client` counts its calls in `recorder`, `admin` does not.
pub struct Recorded {
    pub admin: aws_sdk_dynamodb::Client,
    pub table: stigg_webhooks::config::TableName,
    pub recorder: common::Recorder,
    pub client: aws_sdk_dynamodb::Client,
}

pub async fn recorded_table() -> Recorded {
    let admin = aws_sdk_dynamodb::Client::new(&common::admin_config_for(&common::ddb_endpoint()).await);
    let table = common::create_mirror_table(&admin).await;
    let recorder = common::Recorder::default();
    let sdk = common::sdk_config_for(&common::ddb_endpoint()).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(recorder.clone()).build(),
    );
    Recorded { admin, table, recorder, client }
}

mod backfill;
mod checks;
mod read_through;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}\n## The entitlement mirror (`make bench-mirror`)\n");
    s.push_str(&checks::run().await);
    s.push_str(&read_through::run().await);
    s.push_str(&backfill::run().await);
    let _ = writeln!(s, "{END}");
    println!("{s}");

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], s.trim_end(), &old[b + END.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), s.trim_end()),
    };
    std::fs::write(&path, new).unwrap();
}
