//! `replay` (`make replay`): an EventBridge replay of the stack's archive back onto its bus,
//! followed to the end. With `--to-handlers`, a temporary rule delivers the replayed events to
//! the stack's events queue, so the processor's handlers run on them once more (once per event
//! per replay: the processor scopes their keys by `replay-name`); the rule is removed at the end,
//! whatever the ending (completed, failed, error, Ctrl-C).
//!
//! Self-contained (no `crate::` items): `tests/replay_tool.rs` includes this file and runs it
//! against moto.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_eventbridge::types::{DeadLetterConfig, ReplayDestination, ReplayState, SqsParameters, Target};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use clap::Parser;
use serde_json::{Map, Value, json};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// EventBridge's limits on names (replays and rules: 64 characters).
const MAX_NAME: usize = 64;
/// `yyyymmddThhmmss`
const STAMP_LEN: usize = 15;

#[derive(Parser, Debug, Clone)]
pub struct ReplayArgs {
    /// Start of the window: RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01, midnight UTC),
    /// `now`, or relative to now: -90s, -10m, -2h, -7d (also now-2h).
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End of the window, in the same forms (a time in the future is taken as now).
    #[arg(long, allow_hyphen_values = true)]
    pub to: String,
    /// The archive to replay from: its name or ARN (the stack's EventArchiveArn output).
    #[arg(long, env = "EVENT_ARCHIVE_ARN")]
    pub archive: String,
    /// The bus (ARN) the archive belongs to; checked against the archive's own source when given.
    #[arg(long)]
    pub bus: Option<String>,
    /// Also run this stack's handlers on the replayed events: a temporary rule targets the
    /// events queue for this replay only.
    #[arg(long)]
    pub to_handlers: bool,
    /// With --to-handlers: an event pattern (JSON) or an event type, narrowing which replayed
    /// events reach the handlers.
    #[arg(long)]
    pub pattern: Option<String>,
    /// The events queue's ARN (--to-handlers).
    #[arg(long, env = "EVENTS_QUEUE_ARN")]
    pub queue_arn: Option<String>,
    /// The temporary rule target's dead-letter queue (the stack's ReplayDeadLetterQueueArn output):
    /// what EventBridge could not deliver to the events queue lands there instead of being dropped.
    #[arg(long)]
    pub dead_letter_arn: Option<String>,
    /// Only these rules (ARNs, comma-separated) receive the replay (Destination.FilterArns);
    /// `none`: no rule of the bus, only the handlers (with --to-handlers). Default: every rule.
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<String>,
    /// The stack's name: names the replay `<stack>-<yyyymmddThhmmss>` and the temporary rule
    /// `<stack>-replay-<yyyymmddThhmmss>` (the events queue's policy admits such rules only).
    #[arg(long, default_value = "stigg-webhooks")]
    pub stack: String,
    /// The forwarder's `Source` (EVENT_SOURCE): the temporary rule takes only these events.
    #[arg(long, env = "EVENT_SOURCE", default_value = "stigg.webhooks")]
    pub source: String,
    /// Seconds between two DescribeReplay calls.
    #[arg(long, default_value_t = 5.0)]
    pub poll_seconds: f64,
    /// Seconds to wait after creating the temporary rule before starting the replay (a new
    /// rule takes a moment to take effect in EventBridge).
    #[arg(long, default_value_t = 10.0)]
    pub settle_seconds: f64,
    /// Seconds to keep the temporary rule after the replay completed: EventBridge delivers to
    /// targets asynchronously (with retries) after it has replayed an event.
    #[arg(long, default_value_t = 30.0)]
    pub drain_seconds: f64,
}

/// What the arguments mean, before any call.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub replay_name: String,
    pub from: SystemTime,
    pub to: SystemTime,
    /// The temporary rule for the handlers: its name and pattern.
    pub rule: Option<(String, String)>,
    /// Destination.FilterArns given by the user (the temporary rule's ARN is added at run time).
    pub filter_arns: Vec<String>,
    /// Replay to no rule of the bus, only to the temporary rule.
    pub handlers_only: bool,
    /// TO was in the future and was taken as now.
    pub to_clamped: bool,
}

/// Checks the arguments and names the replay (pure: `now` is given).
pub fn plan(args: &ReplayArgs, now: SystemTime) -> Result<Plan, Error> {
    let from = parse_time(&args.from, now).map_err(|e| format!("FROM: {e}"))?;
    let mut to = parse_time(&args.to, now).map_err(|e| format!("TO: {e}"))?;
    let to_clamped = to > now;
    if to_clamped {
        to = now;
    }
    if from >= to {
        return Err(format!(
            "FROM ({}) must be before TO ({}{})",
            rfc3339(from),
            rfc3339(to),
            if to_clamped { ", now" } else { "" }
        )
        .into());
    }
    if args.pattern.is_some() && !args.to_handlers {
        return Err("PATTERN narrows only what reaches this stack's handlers, so it needs TO_HANDLERS=1. \
                    A replay reaches every rule of the bus and each rule applies its own pattern: \
                    to replay to some rules only, give RULES=<rule arn,...> (Destination.FilterArns)"
            .into());
    }
    let handlers_only = args.rules.iter().any(|r| r == "none");
    if handlers_only && (args.rules.len() != 1 || !args.to_handlers) {
        return Err("RULES=none (no rule of the bus, the handlers only) goes alone and with TO_HANDLERS=1".into());
    }
    for arn in args.rules.iter().filter(|r| *r != "none") {
        if !arn.starts_with("arn:") || !arn.contains(":rule/") {
            return Err(format!(
                "RULES: {arn:?} is not a rule ARN (arn:aws:events:<region>:<account>:rule/<bus>/<name>)"
            )
            .into());
        }
    }
    let replay_name = replay_name(&args.stack, now);
    let rule = if args.to_handlers {
        let pattern = handlers_pattern(args.pattern.as_deref(), &args.source, &replay_name)?;
        Some((rule_name(&args.stack, now)?, pattern))
    } else {
        None
    };
    let filter_arns = args.rules.iter().filter(|r| *r != "none").cloned().collect();
    Ok(Plan { replay_name, from, to, rule, filter_arns, handlers_only, to_clamped })
}

/// `now`, `-2h`, `now-2h`, RFC 3339, or a date (midnight UTC).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let relative = s.strip_prefix("now").unwrap_or(s);
    if let Some(ago) = relative.strip_prefix('-') {
        let (number, unit) = ago.split_at(ago.find(|c: char| !c.is_ascii_digit()).unwrap_or(ago.len()));
        let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected -<number><s|m|h|d>, e.g. -2h"))?;
        let seconds = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(format!("{s:?}: the unit is one of s, m, h, d (e.g. -10m, -2h, -7d)")),
        };
        return now
            .checked_sub(Duration::from_secs(seconds))
            .filter(|t| *t >= UNIX_EPOCH)
            .ok_or_else(|| format!("{s:?} is before 1970"));
    }
    let expected =
        || format!("{s:?}: expected RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01), now, or -10m/-2h/-7d");
    // The SDK's parser takes UTC ("Z") only: an offset (+02:00) is applied here.
    let (utc, offset_seconds) = match s.len().checked_sub(6).map(|i| (i, s.as_bytes())) {
        Some((i, b)) if s.contains('T') && (b[i] == b'+' || b[i] == b'-') && b[i + 3] == b':' => {
            let hours: i64 = s[i + 1..i + 3].parse().map_err(|_| expected())?;
            let minutes: i64 = s[i + 4..].parse().map_err(|_| expected())?;
            let sign = if b[i] == b'+' { 1 } else { -1 };
            (format!("{}Z", &s[..i]), sign * (hours * 3600 + minutes * 60))
        }
        _ if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') => (format!("{s}T00:00:00Z"), 0),
        _ => (s.to_owned(), 0),
    };
    let parsed = DateTime::from_str(&utc, Format::DateTime).map_err(|_| expected())?;
    let local = SystemTime::try_from(parsed).map_err(|_| format!("{s:?} is out of range"))?;
    let shift = Duration::from_secs(offset_seconds.unsigned_abs());
    // 13:30+02:00 is 11:30Z: a positive offset is subtracted.
    if offset_seconds >= 0 { local.checked_sub(shift) } else { local.checked_add(shift) }
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// `yyyymmddThhmmss` (UTC) of a time.
pub fn stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let text = DateTime::from_secs(secs).fmt(Format::DateTime).unwrap_or_default();
    text.chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(STAMP_LEN).collect()
}

/// `<stack>-<yyyymmddThhmmss>`, the stack's part cut so the whole fits 64 characters.
pub fn replay_name(stack: &str, now: SystemTime) -> String {
    let room = MAX_NAME - STAMP_LEN - 1;
    let prefix: String = stack.chars().take(room).collect();
    format!("{}-{}", prefix.trim_end_matches('-'), stamp(now))
}

/// `<stack>-replay-<yyyymmddThhmmss>`: never cut (the events queue's policy matches
/// `*<stack>-replay-*`), so a stack name too long for it is refused.
pub fn rule_name(stack: &str, now: SystemTime) -> Result<String, Error> {
    let name = format!("{stack}-replay-{}", stamp(now));
    if name.len() > MAX_NAME {
        return Err(format!(
            "the stack name {stack:?} is too long for a replay rule's name ({} > {MAX_NAME} characters): \
             TO_HANDLERS needs a stack name of at most {} characters",
            name.len(),
            MAX_NAME - STAMP_LEN - "-replay-".len()
        )
        .into());
    }
    Ok(name)
}

/// The temporary rule's pattern: PATTERN (a JSON event pattern, or an event type T meaning
/// {"detail-type":[T]}) AND this replay's events AND (unless PATTERN says) the forwarder's source.
pub fn handlers_pattern(pattern: Option<&str>, source: &str, replay_name: &str) -> Result<String, Error> {
    let mut merged: Map<String, Value> = match pattern.map(str::trim) {
        None | Some("") => Map::new(),
        Some(p) if p.starts_with('{') => match serde_json::from_str::<Value>(p) {
            Ok(Value::Object(m)) => m,
            Ok(_) => unreachable!("a JSON text starting with '{{' is an object"),
            Err(e) => return Err(format!("PATTERN is not valid JSON: {e}").into()),
        },
        Some(p) if p.starts_with('[') || p.starts_with('"') => {
            return Err(
                "PATTERN is an event pattern (a JSON object) or an event type (e.g. subscription.created)".into()
            );
        }
        Some(event_type) => {
            if event_type.chars().any(|c| c.is_whitespace() || c.is_control()) || event_type.len() > 128 {
                return Err(format!("PATTERN {event_type:?} is neither an event pattern nor an event type").into());
            }
            Map::from_iter([("detail-type".to_owned(), json!([event_type]))])
        }
    };
    if merged.contains_key("replay-name") {
        return Err("PATTERN must not match on replay-name: the tool adds this replay's name".into());
    }
    merged.entry("source").or_insert_with(|| json!([source]));
    merged.insert("replay-name".to_owned(), json!([replay_name]));
    Ok(Value::Object(merged).to_string())
}

/// The temporary rule's target: the events queue, with the replay dead-letter queue when given;
/// a FIFO queue gets a message group (EventBridge requires one): the replay's name, so a
/// replay's events reach the handlers one at a time, as a FIFO queue's events do.
pub fn handlers_target(queue_arn: &str, dead_letter_arn: Option<&str>, replay_name: &str) -> Result<Target, Error> {
    let mut target = Target::builder().id("events-queue").arn(queue_arn);
    if let Some(dlq) = dead_letter_arn {
        target = target.dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
    }
    if queue_arn.ends_with(".fifo") {
        target = target.sqs_parameters(SqsParameters::builder().message_group_id(replay_name).build());
    }
    Ok(target.build()?)
}

/// How far the replay is through its window, from EventLastReplayedTime (0 to 100).
pub fn percent(from: SystemTime, to: SystemTime, last: SystemTime) -> f64 {
    let span = to.duration_since(from).unwrap_or_default().as_secs_f64();
    let done = last.duration_since(from).unwrap_or_default().as_secs_f64();
    if span <= 0.0 { 100.0 } else { (done / span * 100.0).clamp(0.0, 100.0) }
}

pub fn rfc3339(t: SystemTime) -> String {
    DateTime::from(t).fmt(Format::DateTime).unwrap_or_default()
}

fn minutes_seconds(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}

/// The archive's name, from a name or an ARN (`arn:...:archive/<name>`).
pub fn archive_name(archive: &str) -> &str {
    archive.rsplit_once(":archive/").map_or(archive, |(_, name)| name)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Completed,
    Failed(String),
    Cancelled(String),
}

#[derive(Debug, Clone)]
pub struct Report {
    pub replay_name: String,
    /// The temporary rule (removed by the time the report is returned, unless `rule_left`).
    pub rule_name: Option<String>,
    pub ending: Ending,
    /// The temporary rule could not be removed (the message says how to remove it by hand).
    pub rule_left: bool,
}

/// Runs the replay the arguments describe, printing progress through `out`. `cancel` is the
/// Ctrl-C: when it resolves, a started replay is cancelled (CancelReplay) and followed to its
/// end, and the temporary rule is removed either way.
pub async fn replay(
    events: &aws_sdk_eventbridge::Client,
    args: &ReplayArgs,
    now: SystemTime,
    cancel: impl Future<Output = ()>,
    out: &mut (dyn FnMut(&str) + Send),
) -> Result<Report, Error> {
    let plan = plan(args, now)?;
    let archive = archive_name(&args.archive);
    let described = events
        .describe_archive()
        .archive_name(archive)
        .send()
        .await
        .map_err(|e| context(&format!("DescribeArchive {archive}"), e))?;
    let archive_arn = described.archive_arn().unwrap_or(&args.archive).to_owned();
    let bus = described.event_source_arn().ok_or("the archive names no event bus")?.to_owned();
    if let Some(given) = &args.bus
        && given != &bus
        && !bus.ends_with(&format!("/{given}"))
    {
        return Err(format!(
            "the archive {archive} is of the bus {bus}, not {given} (a replay goes back to the archive's bus)"
        )
        .into());
    }
    if let Some(days) = described.retention_days().filter(|d| *d > 0) {
        let horizon = now.checked_sub(Duration::from_secs(days as u64 * 86_400)).unwrap_or(UNIX_EPOCH);
        if plan.to <= horizon {
            return Err(format!(
                "the window ends ({}) before the archive's retention of {days} days ({}): nothing is left to replay",
                rfc3339(plan.to),
                rfc3339(horizon)
            )
            .into());
        }
        if plan.from < horizon {
            out(&format!(
                "note: the archive keeps {days} days: events before {} are gone, the replay starts there in effect",
                rfc3339(horizon)
            ));
        }
    }
    if let Some(created) = described.creation_time().and_then(|t| SystemTime::try_from(*t).ok())
        && plan.to < created
    {
        out(&format!(
            "note: the archive was created at {}: it holds only events archived since (an event's own time can be older)",
            rfc3339(created)
        ));
    }
    if plan.to_clamped {
        out(&format!("note: TO is in the future: the window ends now ({})", rfc3339(plan.to)));
    }
    let queue_arn = match (&plan.rule, &args.queue_arn) {
        (Some(_), None) => return Err("TO_HANDLERS needs the events queue's ARN (--queue-arn: the stack's EventsQueueArn output, locally EVENTS_QUEUE_ARN)".into()),
        (_, q) => q.clone(),
    };

    let mut rule_arn = None;
    let mut rule_created = false;
    let mut started = false;
    let run = async {
        if let (Some((rule, pattern)), Some(queue)) = (&plan.rule, &queue_arn) {
            let put = events
                .put_rule()
                .name(rule)
                .event_bus_name(&bus)
                .event_pattern(pattern)
                .description(format!("make replay {} to this stack's handlers (temporary)", plan.replay_name))
                .send()
                .await
                .map_err(|e| context(&format!("PutRule {rule}"), e))?;
            rule_created = true;
            rule_arn = put.rule_arn;
            let targets = events
                .put_targets()
                .rule(rule)
                .event_bus_name(&bus)
                .targets(handlers_target(queue, args.dead_letter_arn.as_deref(), &plan.replay_name)?)
                .send()
                .await
                .map_err(|e| context(&format!("PutTargets {rule}"), e))?;
            if targets.failed_entry_count > 0 {
                let why = targets.failed_entries().first().and_then(|e| e.error_message()).unwrap_or("?");
                return Err(format!("the rule {rule} could not target {queue}: {why}").into());
            }
            out(&format!("rule {rule}: {pattern} -> {queue}"));
            if args.dead_letter_arn.is_none() && std::env::var_os("AWS_ENDPOINT_URL").is_none() {
                out("note: no dead-letter queue for the rule's target (--dead-letter-arn): an event EventBridge \
                     cannot deliver to the events queue is dropped after its retries");
            }
            if args.settle_seconds > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(args.settle_seconds)).await;
            }
        }
        let mut destination = ReplayDestination::builder().arn(&bus);
        let mut filters = plan.filter_arns.clone();
        if let Some(arn) = &rule_arn
            && (plan.handlers_only || !filters.is_empty())
        {
            filters.push(arn.clone());
        }
        if !filters.is_empty() {
            destination = destination.set_filter_arns(Some(filters.clone()));
        }
        let started_at = Instant::now();
        events
            .start_replay()
            .replay_name(&plan.replay_name)
            .description(format!(
                "make replay FROM={} TO={}{}",
                rfc3339(plan.from),
                rfc3339(plan.to),
                if plan.rule.is_some() { " TO_HANDLERS=1" } else { "" }
            ))
            .event_source_arn(&archive_arn)
            .event_start_time(DateTime::from(plan.from))
            .event_end_time(DateTime::from(plan.to))
            .destination(destination.build()?)
            .send()
            .await
            .map_err(|e| context(&format!("StartReplay {}", plan.replay_name), e))?;
        started = true;
        out(&format!(
            "replay {}: {} .. {} from {} to {}{}",
            plan.replay_name,
            rfc3339(plan.from),
            rfc3339(plan.to),
            archive_arn,
            bus,
            match (filters.is_empty(), &rule_arn) {
                (true, None) => " (every rule of the bus)".to_owned(),
                (true, Some(_)) => " (every rule of the bus, the handlers' rule included)".to_owned(),
                (false, _) => format!(" (rules: {})", filters.join(", ")),
            }
        ));
        follow(events, &plan, args.poll_seconds, started_at, out).await
    };
    // Ctrl-C: stop where we are, then cancel what was started.
    let outcome = tokio::select! {
        ending = run => Some(ending),
        _ = cancel => None,
    };
    let ending = match outcome {
        Some(Ok(ending)) => Ok(ending),
        Some(Err(e)) => Err(e),
        None if started => {
            out(&format!("interrupted: cancelling the replay {}", plan.replay_name));
            cancel_and_follow(events, &plan, args.poll_seconds, out).await
        }
        None => Ok(Ending::Cancelled("interrupted before the replay started".to_owned())),
    };
    if matches!(ending, Ok(Ending::Completed)) && rule_created && args.drain_seconds > 0.0 {
        out(&format!(
            "keeping the rule {:.0} s more: EventBridge delivers replayed events to targets asynchronously",
            args.drain_seconds
        ));
        tokio::time::sleep(Duration::from_secs_f64(args.drain_seconds)).await;
    }
    let mut rule_left = false;
    if rule_created && let Some((rule, _)) = &plan.rule {
        match remove_rule(events, rule, &bus).await {
            Ok(()) => out(&format!("rule {rule} removed")),
            Err(e) => {
                rule_left = true;
                out(&format!(
                    "the rule {rule} could not be removed ({e}); remove it by hand: \
                     aws events remove-targets --event-bus-name {bus} --rule {rule} --ids events-queue && \
                     aws events delete-rule --event-bus-name {bus} --name {rule}"
                ));
            }
        }
    }
    Ok(Report { replay_name: plan.replay_name, rule_name: plan.rule.map(|(r, _)| r), ending: ending?, rule_left })
}

/// An SDK error as one line: the operation, then the service's code and message.
fn context<E: std::error::Error + 'static, R: std::fmt::Debug>(
    operation: &str,
    e: aws_sdk_eventbridge::error::SdkError<E, R>,
) -> Error {
    format!("{operation}: {}", aws_sdk_eventbridge::error::DisplayErrorContext(&e)).into()
}

async fn remove_rule(events: &aws_sdk_eventbridge::Client, rule: &str, bus: &str) -> Result<(), Error> {
    let removed = events.remove_targets().rule(rule).event_bus_name(bus).ids("events-queue").send().await;
    match removed {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => return Ok(()),
        Err(e) => return Err(aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string().into()),
    }
    events
        .delete_rule()
        .name(rule)
        .event_bus_name(bus)
        .send()
        .await
        .map_err(|e| aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string())?;
    Ok(())
}

/// DescribeReplay until the replay ends, a line whenever its state or progress moves.
async fn follow(
    events: &aws_sdk_eventbridge::Client,
    plan: &Plan,
    poll_seconds: f64,
    started_at: Instant,
    out: &mut (dyn FnMut(&str) + Send),
) -> Result<Ending, Error> {
    let mut last_line = String::new();
    loop {
        let d = events
            .describe_replay()
            .replay_name(&plan.replay_name)
            .send()
            .await
            .map_err(|e| context(&format!("DescribeReplay {}", plan.replay_name), e))?;
        let state = d.state().cloned().unwrap_or(ReplayState::Starting);
        let last = d.event_last_replayed_time().and_then(|t| SystemTime::try_from(*t).ok());
        let progress = match (&state, last) {
            (ReplayState::Completed, _) => "100%".to_owned(),
            (_, Some(last)) => format!("{:.0}% (events up to {})", percent(plan.from, plan.to, last), rfc3339(last)),
            (_, None) => "0%".to_owned(),
        };
        let line = format!("{} {progress}", state.as_str());
        if line != last_line {
            out(&format!("replay {}: {line}, {} elapsed", plan.replay_name, minutes_seconds(started_at.elapsed())));
            last_line = line;
        }
        let reason = || d.state_reason().unwrap_or("no reason given").to_owned();
        match state {
            ReplayState::Completed => return Ok(Ending::Completed),
            ReplayState::Failed => return Ok(Ending::Failed(reason())),
            ReplayState::Cancelled => return Ok(Ending::Cancelled(reason())),
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs_f64(poll_seconds)).await;
    }
}

async fn cancel_and_follow(
    events: &aws_sdk_eventbridge::Client,
    plan: &Plan,
    poll_seconds: f64,
    out: &mut (dyn FnMut(&str) + Send),
) -> Result<Ending, Error> {
    if let Err(e) = events.cancel_replay().replay_name(&plan.replay_name).send().await {
        // Already at its end (completed or failed meanwhile): say how it ended.
        out(&format!("CancelReplay: {}", aws_sdk_eventbridge::error::DisplayErrorContext(&e)));
    }
    let waited = Instant::now();
    let ending = tokio::time::timeout(Duration::from_secs(120), follow(events, plan, poll_seconds, waited, out)).await;
    match ending {
        Ok(Ok(Ending::Completed)) => {
            Ok(Ending::Cancelled("interrupted, but the replay had already completed".to_owned()))
        }
        Ok(ending) => ending,
        Err(_) => Ok(Ending::Cancelled("interrupted; the replay was still cancelling after 120 s".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        parse_time(s, UNIX_EPOCH).unwrap()
    }

    fn args(extra: &[&str]) -> ReplayArgs {
        let mut argv = vec!["replay", "--archive", "arn:aws:events:us-east-1:123456789012:archive/a"];
        argv.extend_from_slice(extra);
        ReplayArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn times_parse_in_rfc3339_dates_and_relative_forms() {
        let now = at("2026-03-01T12:00:00Z");
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-2h", now).unwrap(), at("2026-03-01T10:00:00Z"));
        assert_eq!(parse_time("now-10m", now).unwrap(), at("2026-03-01T11:50:00Z"));
        assert_eq!(parse_time("-90s", now).unwrap(), at("2026-03-01T11:58:30Z"));
        assert_eq!(parse_time("-7d", now).unwrap(), at("2026-02-22T12:00:00Z"));
        assert_eq!(parse_time("2026-02-28", now).unwrap(), at("2026-02-28T00:00:00Z"));
        assert_eq!(parse_time("2026-03-01T13:30:00+02:00", now).unwrap(), at("2026-03-01T11:30:00Z"));
        assert_eq!(parse_time("2026-03-01T07:00:00-05:30", now).unwrap(), at("2026-03-01T12:30:00Z"));
        assert_eq!(
            parse_time("2026-03-01T11:00:00.250Z", now).unwrap(),
            at("2026-03-01T11:00:00Z") + Duration::from_millis(250)
        );
        for bad in ["-2", "-2w", "yesterday", "2026-13-01", "-h", ""] {
            assert!(parse_time(bad, now).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_window_is_checked() {
        let now = at("2026-03-01T12:00:00Z");
        let p = plan(&args(&["--from", "-2h", "--to", "now"]), now).unwrap();
        assert_eq!((p.from, p.to, p.to_clamped), (at("2026-03-01T10:00:00Z"), now, false));
        let err = plan(&args(&["--from", "now", "--to", "-1h"]), now).unwrap_err().to_string();
        assert!(err.contains("must be before"), "{err}");
        assert!(plan(&args(&["--from", "-1h", "--to", "-1h"]), now).is_err(), "an empty window");
        let future = plan(&args(&["--from", "-1h", "--to", "2026-03-02T00:00:00Z"]), now).unwrap();
        assert_eq!((future.to, future.to_clamped), (now, true));
    }

    #[test]
    fn a_pattern_without_to_handlers_is_refused_with_the_way_to_narrow_rules() {
        let now = at("2026-03-01T12:00:00Z");
        let err = plan(&args(&["--from", "-1h", "--to", "now", "--pattern", "subscription.created"]), now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("TO_HANDLERS=1") && err.contains("RULES=") && err.contains("FilterArns"), "{err}");
        let err = plan(&args(&["--from", "-1h", "--to", "now", "--rules", "none"]), now).unwrap_err().to_string();
        assert!(err.contains("TO_HANDLERS=1"), "{err}");
        assert!(plan(&args(&["--from", "-1h", "--to", "now", "--rules", "my-rule"]), now).is_err());
        let rule = "arn:aws:events:us-east-1:123456789012:rule/bus/r1";
        let p = plan(&args(&["--from", "-1h", "--to", "now", "--rules", &format!("{rule},{rule}2")]), now).unwrap();
        assert_eq!(p.filter_arns, vec![rule.to_owned(), format!("{rule}2")]);
    }

    #[test]
    fn names_follow_the_spec_and_fit_64_characters() {
        let now = at("2026-03-01T09:05:07Z") + Duration::from_millis(900);
        assert_eq!(stamp(now), "20260301T090507");
        assert_eq!(replay_name("stigg-webhooks", now), "stigg-webhooks-20260301T090507");
        assert_eq!(rule_name("stigg-webhooks", now).unwrap(), "stigg-webhooks-replay-20260301T090507");
        let long = "s".repeat(100);
        assert_eq!(replay_name(&long, now).len(), 64);
        assert!(replay_name(&long, now).ends_with("-20260301T090507"));
        assert_eq!(rule_name(&"s".repeat(41), now).unwrap().len(), 64);
        let err = rule_name(&"s".repeat(42), now).unwrap_err().to_string();
        assert!(err.contains("at most 41"), "{err}");
    }

    #[test]
    fn the_handlers_rule_is_the_pattern_and_this_replay() {
        let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(
            parse(handlers_pattern(None, "stigg.webhooks", "r1").unwrap()),
            json!({"source": ["stigg.webhooks"], "replay-name": ["r1"]})
        );
        assert_eq!(
            parse(handlers_pattern(Some("subscription.created"), "stigg.webhooks", "r1").unwrap()),
            json!({"detail-type": ["subscription.created"], "source": ["stigg.webhooks"], "replay-name": ["r1"]})
        );
        let custom = r#"{"detail-type":[{"prefix":"entitlement"}],"detail":{"customer":{"id":["c1"]}}}"#;
        assert_eq!(
            parse(handlers_pattern(Some(custom), "stigg.webhooks", "r1").unwrap()),
            json!({"detail-type": [{"prefix": "entitlement"}], "detail": {"customer": {"id": ["c1"]}},
                   "source": ["stigg.webhooks"], "replay-name": ["r1"]})
        );
        // The user's own source stays.
        let own = parse(handlers_pattern(Some(r#"{"source":["other"]}"#), "stigg.webhooks", "r1").unwrap());
        assert_eq!(own["source"], json!(["other"]));
        assert!(handlers_pattern(Some(r#"{"replay-name":["x"]}"#), "s", "r1").is_err());
        assert!(handlers_pattern(Some("{not json"), "s", "r1").is_err());
        assert!(handlers_pattern(Some("[1]"), "s", "r1").is_err());
        assert!(handlers_pattern(Some("two words"), "s", "r1").is_err());
    }

    #[test]
    fn the_target_is_the_events_queue_with_its_dead_letter_queue_and_a_group_when_fifo() {
        let standard =
            handlers_target("arn:aws:sqs:us-east-1:1:events", Some("arn:aws:sqs:us-east-1:1:replay-dlq"), "r1")
                .unwrap();
        assert_eq!(standard.arn(), "arn:aws:sqs:us-east-1:1:events");
        assert_eq!(standard.dead_letter_config().and_then(|d| d.arn()), Some("arn:aws:sqs:us-east-1:1:replay-dlq"));
        assert!(standard.sqs_parameters().is_none());
        let fifo = handlers_target("arn:aws:sqs:us-east-1:1:events.fifo", None, "r1").unwrap();
        assert_eq!(fifo.sqs_parameters().and_then(|p| p.message_group_id()), Some("r1"));
        assert!(fifo.dead_letter_config().is_none());
    }

    #[test]
    fn progress_is_the_share_of_the_window_replayed() {
        let (from, to) = (at("2026-03-01T10:00:00Z"), at("2026-03-01T12:00:00Z"));
        assert_eq!(percent(from, to, at("2026-03-01T11:00:00Z")), 50.0);
        assert_eq!(percent(from, to, at("2026-03-01T09:00:00Z")), 0.0);
        assert_eq!(percent(from, to, at("2026-03-01T13:00:00Z")), 100.0);
        assert_eq!(
            archive_name("arn:aws:events:us-east-1:123456789012:archive/stigg-local-archive"),
            "stigg-local-archive"
        );
        assert_eq!(archive_name("plain"), "plain");
    }
}
