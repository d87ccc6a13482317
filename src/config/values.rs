//! The parsed value types: table names, queue URLs, source allow lists, Stigg API keys.

use std::net::IpAddr;

use ipnet::IpNet;

/// A DynamoDB table name (3-255 of `[A-Za-z0-9_.-]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_len = (3..=255).contains(&s.len());
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if ok_len && ok_chars {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("{s:?} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An SQS queue URL; a name ending in `.fifo` is a FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl(String);

impl QueueUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        if (s.starts_with("https://") || s.starts_with("http://")) && s.len() > 10 {
            Ok(Self(s.trim_end_matches('/').to_owned()))
        } else {
            Err(format!("{s:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"))
        }
    }

    pub fn is_fifo(&self) -> bool {
        self.0.ends_with(".fifo")
    }

    /// The region in an AWS queue URL (`https://sqs.<region>.amazonaws.com/...`, or the legacy
    /// `https://<region>.queue.amazonaws.com/...`); `None` for other hosts (local emulators).
    pub fn region(&self) -> Option<&str> {
        let host = self.0.split("://").nth(1)?.split('/').next()?;
        let host = host.split(':').next()?;
        let region = if let Some(rest) = host.strip_prefix("sqs.") {
            rest.split_once(".amazonaws.com").map(|(r, _)| r)?
        } else {
            host.split_once(".queue.amazonaws.com").map(|(r, _)| r)?
        };
        let valid =
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then_some(region)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Source addresses allowed to call the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAllowList(Vec<IpNet>);

impl SourceAllowList {
    /// Parses a comma list of CIDRs or bare addresses (a bare address is a /32 or /128).
    pub fn parse(list: &str) -> Result<Self, String> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err("no CIDR given".into());
        }
        Ok(Self(nets))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client may reach us as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A Stigg server API key (full access, or scoped with "Event Queue: Read"). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the API key is empty".into());
        }
        // It travels in an HTTP header: printable ASCII only.
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the API key has characters an HTTP header cannot carry".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}
