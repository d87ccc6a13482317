//! Stigg's status page (incident.io) as data: uptime per component and incidents.
//!
//! The page has no official API; its own endpoint
//! `.../proxy/status.stigg.io/component_impacts?start_at=<ISO>&end_at=<ISO>` answers
//! `{"incident_links":[{"published_at","id","name","status","permalink"}],
//! "component_uptimes":[{"component_id","data_available_since","uptime"}]}`. Because it is
//! unofficial, [`StatusReport::parse`] never fails: unknown components, missing fields and a
//! changed shape become [`Anomaly`]s, counted in metrics, and the rest is still reported.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

/// Stigg's components, by the ids the status page uses.
pub const COMPONENTS: [(&str, &str); 4] = [
    ("01JQV6ECFPKWSMXBQ81NHKKWQP", "API"),
    ("01JQV6ECFP7YKP9DC886WCCD6B", "Edge API"),
    ("01JWWMF1XCHBJA90R2GBFDCPGC", "Infrastructure"),
    ("01JQV6ECFPD3JFJ29DX6E31K62", "App"),
];

pub fn component_name(id: &str) -> Option<&'static str> {
    COMPONENTS.iter().find(|(known, _)| *known == id).map(|(_, name)| *name)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentUptime {
    pub id: String,
    /// The component's name, or its id when it is not one we know.
    pub name: String,
    pub known: bool,
    /// Percent over the window.
    pub uptime: Option<f64>,
    pub data_available_since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub id: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub permalink: Option<String>,
    pub published_at: Option<String>,
}

impl Incident {
    /// Not resolved. An incident without a status is not counted (see [`Anomaly`]): a renamed
    /// field must not page anyone.
    pub fn is_active(&self) -> bool {
        self.status.as_deref().is_some_and(|s| !s.trim().eq_ignore_ascii_case("resolved"))
    }
}

/// Something in the answer that does not match what we expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Anomaly {
    /// A component id not in [`COMPONENTS`] (Stigg added or renamed one).
    UnknownComponent(String),
    /// A known component absent from the answer.
    MissingComponent(String),
    /// A field we read is absent or of another type (`component_uptimes[2].uptime`).
    MissingField(String),
    /// The answer's shape changed (`incident_links is not a list`).
    Shape(String),
}

impl Anomaly {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownComponent(_) => "unknown_component",
            Self::MissingComponent(_) => "missing_component",
            Self::MissingField(_) => "missing_field",
            Self::Shape(_) => "shape",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusReport {
    pub components: Vec<ComponentUptime>,
    pub incidents: Vec<Incident>,
    pub anomalies: Vec<Anomaly>,
}

fn string_at(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// A percentage given as a number or a numeric string.
fn percent(v: Option<&Value>) -> Option<f64> {
    let n = match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok(),
        _ => None,
    }?;
    (n.is_finite() && (0.0..=100.0).contains(&n)).then_some(n)
}

impl StatusReport {
    /// Reads whatever of the answer fits; never fails.
    pub fn parse(answer: &Value) -> Self {
        let mut report = Self::default();
        if !answer.is_object() {
            report.anomalies.push(Anomaly::Shape("the answer is not a JSON object".into()));
            return report;
        }
        match answer.get("component_uptimes") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(id) = string_at(item, "component_id") else {
                        report.anomalies.push(Anomaly::MissingField(format!("component_uptimes[{i}].component_id")));
                        continue;
                    };
                    let uptime = percent(item.get("uptime"));
                    if uptime.is_none() {
                        report.anomalies.push(Anomaly::MissingField(format!("component_uptimes[{i}].uptime")));
                    }
                    let name = component_name(&id);
                    if name.is_none() {
                        report.anomalies.push(Anomaly::UnknownComponent(id.clone()));
                    }
                    report.components.push(ComponentUptime {
                        name: name.map_or_else(|| id.clone(), str::to_owned),
                        known: name.is_some(),
                        id,
                        uptime,
                        data_available_since: string_at(item, "data_available_since"),
                    });
                }
                for (id, name) in COMPONENTS {
                    if !report.components.iter().any(|c| c.id == id) {
                        report.anomalies.push(Anomaly::MissingComponent(name.to_owned()));
                    }
                }
            }
            Some(_) => report.anomalies.push(Anomaly::Shape("component_uptimes is not a list".into())),
            None => report.anomalies.push(Anomaly::Shape("no component_uptimes".into())),
        }
        match answer.get("incident_links") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let incident = Incident {
                        id: string_at(item, "id"),
                        name: string_at(item, "name"),
                        status: string_at(item, "status"),
                        permalink: string_at(item, "permalink"),
                        published_at: string_at(item, "published_at"),
                    };
                    if incident.status.is_none() {
                        report.anomalies.push(Anomaly::MissingField(format!("incident_links[{i}].status")));
                    }
                    report.incidents.push(incident);
                }
            }
            Some(_) => report.anomalies.push(Anomaly::Shape("incident_links is not a list".into())),
            None => report.anomalies.push(Anomaly::Shape("no incident_links".into())),
        }
        report
    }

    pub fn active_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter().filter(|i| i.is_active())
    }

    /// `StiggComponentUptime` (dimension `Component`), `StiggActiveIncidents` and
    /// `StiggStatusAnomalies` (dimension `Kind`). Recorded as one-value distributions, not
    /// gauges: a component that vanishes from the answer stops being reported instead of
    /// repeating its last value.
    pub fn record_metrics(&self) {
        for c in &self.components {
            if let Some(uptime) = c.uptime {
                let histogram = metrics::histogram!("StiggComponentUptime", "Component" => c.name.clone());
                crate::metrics::record_distribution(histogram, uptime);
            }
        }
        let incidents = self.active_incidents().count() as f64;
        crate::metrics::record_distribution(metrics::histogram!("StiggActiveIncidents"), incidents);
        for a in &self.anomalies {
            metrics::counter!("StiggStatusAnomalies", "Kind" => a.kind()).increment(1);
        }
    }

    /// The terminal view (`make stigg-status`).
    pub fn table(&self, window: Duration) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let hours = window.as_secs() / 3600;
        let _ = writeln!(out, "Stigg status, last {hours} h\n");
        let _ = writeln!(out, "{:<16} {:>9}  DATA SINCE", "COMPONENT", "UPTIME");
        for c in &self.components {
            let uptime = c.uptime.map_or_else(|| "?".to_owned(), |u| format!("{u:.2} %"));
            let name = if c.known { c.name.clone() } else { format!("{} (unknown)", c.name) };
            let _ = writeln!(out, "{name:<16} {uptime:>9}  {}", c.data_available_since.as_deref().unwrap_or("-"));
        }
        let active: Vec<_> = self.active_incidents().collect();
        let _ = writeln!(
            out,
            "\nOpen incidents: {}",
            if active.is_empty() { "none".to_owned() } else { active.len().to_string() }
        );
        for i in &active {
            let _ = writeln!(
                out,
                "  [{}] {}  {}  (published {})",
                i.status.as_deref().unwrap_or("?"),
                i.name.as_deref().unwrap_or("(no name)"),
                i.permalink.as_deref().unwrap_or("-"),
                i.published_at.as_deref().unwrap_or("?")
            );
        }
        let resolved = self.incidents.iter().filter(|i| !i.is_active()).count();
        if resolved > 0 {
            let _ = writeln!(out, "Resolved in the window: {resolved}");
        }
        for a in &self.anomalies {
            let detail = match a {
                Anomaly::UnknownComponent(d)
                | Anomaly::MissingComponent(d)
                | Anomaly::MissingField(d)
                | Anomaly::Shape(d) => d,
            };
            let _ = writeln!(out, "note: {}: {detail}", a.kind().replace('_', " "));
        }
        out
    }
}

/// Why the probe got no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the status page answered {0}")]
    Status(u16),
    #[error("the status page could not be reached")]
    Transport(#[source] reqwest::Error),
    #[error("the status page's answer is not JSON")]
    NotJson,
}

/// The status page's component-impacts endpoint.
#[derive(Debug, Clone)]
pub struct StatusPage {
    http: reqwest::Client,
    url: String,
}

impl StatusPage {
    pub fn new(url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("stigg-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with only a timeout and a user agent always builds");
        Self { http, url: url.to_owned() }
    }

    /// Reads the window `[now - window, now]`.
    pub async fn fetch(&self, now: SystemTime, window: Duration) -> Result<StatusReport, ProbeError> {
        let start = crate::metrics::rfc3339(now - window);
        let end = crate::metrics::rfc3339(now);
        let response = self
            .http
            .get(&self.url)
            .query(&[("start_at", start.as_str()), ("end_at", end.as_str())])
            .header("accept", "application/json")
            .send()
            .await
            .map_err(ProbeError::Transport)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ProbeError::Status(status));
        }
        let body = response.bytes().await.map_err(ProbeError::Transport)?;
        let answer: Value = serde_json::from_slice(&body).map_err(|_| ProbeError::NotJson)?;
        Ok(StatusReport::parse(&answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn documented() -> Value {
        json!({
            "incident_links": [
                {"published_at": "2026-12-01T08:00:00Z", "id": "01INC1", "name": "Webhook delivery delays",
                 "status": "investigating", "permalink": "https://status.stigg.io/incidents/01INC1"},
                {"published_at": "2026-11-30T20:00:00Z", "id": "01INC0", "name": "Dashboard slow",
                 "status": "resolved", "permalink": "https://status.stigg.io/incidents/01INC0"}
            ],
            "component_uptimes": [
                {"component_id": "01JQV6ECFPKWSMXBQ81NHKKWQP", "data_available_since": "2025-04-01T00:00:00Z", "uptime": "99.95"},
                {"component_id": "01JQV6ECFP7YKP9DC886WCCD6B", "data_available_since": "2025-04-01T00:00:00Z", "uptime": 100},
                {"component_id": "01JWWMF1XCHBJA90R2GBFDCPGC", "data_available_since": "2025-06-01T00:00:00Z", "uptime": "100.0"},
                {"component_id": "01JQV6ECFPD3JFJ29DX6E31K62", "data_available_since": "2025-04-01T00:00:00Z", "uptime": "98.5"}
            ]
        })
    }

    #[test]
    fn the_documented_answer_gives_uptime_per_named_component_and_open_incidents() {
        let r = StatusReport::parse(&documented());
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        let names: Vec<_> = r.components.iter().map(|c| (c.name.as_str(), c.uptime)).collect();
        assert_eq!(
            names,
            [("API", Some(99.95)), ("Edge API", Some(100.0)), ("Infrastructure", Some(100.0)), ("App", Some(98.5))]
        );
        let active: Vec<_> = r.active_incidents().map(|i| i.id.as_deref()).collect();
        assert_eq!(active, [Some("01INC1")]);
        let table = r.table(Duration::from_secs(86_400));
        assert!(
            table.contains("Edge API")
                && table.contains("99.95 %")
                && table.contains("https://status.stigg.io/incidents/01INC1"),
            "{table}"
        );
        assert!(table.contains("Open incidents: 1") && table.contains("Resolved in the window: 1"), "{table}");
    }

    #[test]
    fn unknown_components_and_missing_fields_are_counted_not_fatal() {
        let answer = json!({
            "incident_links": [{"id": "x", "name": "no status here"}],
            "component_uptimes": [
                {"component_id": "01NEWCOMPONENT", "uptime": "99"},
                {"component_id": "01JQV6ECFPKWSMXBQ81NHKKWQP", "uptime": "n/a"},
                {"uptime": "100"}
            ]
        });
        let r = StatusReport::parse(&answer);
        let kinds: Vec<_> = r.anomalies.iter().map(Anomaly::kind).collect();
        assert!(kinds.contains(&"unknown_component"), "{kinds:?}");
        assert!(kinds.contains(&"missing_field"), "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "missing_component").count(), 3, "{kinds:?}");
        assert_eq!(
            r.components.iter().find(|c| c.id == "01NEWCOMPONENT").map(|c| (c.known, c.uptime)),
            Some((false, Some(99.0)))
        );
        assert_eq!(r.active_incidents().count(), 0, "an incident without a status pages no one");
    }

    #[test]
    fn a_changed_shape_is_reported_as_such() {
        for answer in
            [json!([1, 2]), json!({"data": {}}), json!({"incident_links": {}, "component_uptimes": "x"}), json!(null)]
        {
            let r = StatusReport::parse(&answer);
            assert!(r.anomalies.iter().any(|a| a.kind() == "shape"), "{answer}: {:?}", r.anomalies);
            assert!(r.components.is_empty() && r.incidents.is_empty());
        }
    }

    #[test]
    fn percentages_outside_0_to_100_or_not_numbers_are_not_uptime() {
        assert_eq!(percent(Some(&json!("99.5 %"))), Some(99.5));
        assert_eq!(percent(Some(&json!(150))), None);
        assert_eq!(percent(Some(&json!("NaN"))), None);
        assert_eq!(percent(Some(&json!(true))), None);
        assert_eq!(percent(None), None);
    }
}
