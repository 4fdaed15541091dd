//! Parsers of flag values that are more than a number or a name: fsync modes, durations, queue limits,
//! certificate roles. Each returns a message naming the bad value, which clap prints (exit 64).

use std::time::Duration;

use pm_task::pipeline::queue_or_default;

use crate::store::FsyncMode;

/// Parses `always`, `none` or `batch=<ms>`.
pub fn parse_fsync(s: &str) -> Result<FsyncMode, String> {
    match s {
        "always" => Ok(FsyncMode::Always),
        "none" => Ok(FsyncMode::None),
        _ => match s.strip_prefix("batch=") {
            Some(ms) => match ms.trim_end_matches("ms").parse::<u64>() {
                Ok(ms) if ms > 0 && ms <= 10_000 => Ok(FsyncMode::Batch(Duration::from_millis(ms))),
                _ => Err(format!("batch window {ms:?} must be 1..=10000 milliseconds")),
            },
            None => Err(format!("{s:?}: expected always, batch=<ms> or none")),
        },
    }
}

/// Parses one `--tls-client-role` value: `ROLE=NAME`.
pub fn parse_client_role(s: &str) -> Result<(pm_protocol::Role, String), String> {
    use pm_protocol::Role;
    let (role, name) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected ROLE=NAME"))?;
    let role = match role.trim() {
        "producer" => Role::Producer,
        "agent" => Role::Agent,
        "admin" => Role::Admin,
        "peer" => Role::Peer,
        other => return Err(format!("`{other}`: the role must be producer, agent, admin or peer")),
    };
    if name.is_empty() {
        return Err(format!("`{s}`: the certificate name is empty"));
    }
    Ok((role, name.to_string()))
}

/// Parses one `--queue-limit` value.
pub fn parse_queue_limit(s: &str) -> Result<(String, crate::shard::QueueLimits), String> {
    let (name, opts) = s.split_once(':').ok_or_else(|| format!("`{s}`: expected NAME:max-per-key=N,rate=R"))?;
    pm_task::pipeline::validate_queue_name(name)?;
    let mut l = crate::shard::QueueLimits::default();
    for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("`{opt}`: expected KEY=VALUE"))?;
        let num = |v: &str| v.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0);
        match k {
            "max-per-key" | "maxConcurrentPerKey" => {
                l.max_per_key = v.parse().map_err(|_| format!("max-per-key `{v}`: not a count"))?
            }
            "rate" => l.rate_per_sec = num(v).ok_or_else(|| format!("rate `{v}`: not a rate per second"))?,
            "burst" => l.burst = num(v).ok_or_else(|| format!("burst `{v}`: not a count"))?,
            other => {
                return Err(format!("unknown queue limit `{other}` (max-per-key or maxConcurrentPerKey, rate, burst)"))
            }
        }
    }
    if l.burst == 0.0 {
        l.burst = l.rate_per_sec.max(1.0);
    }
    Ok((queue_or_default(name).to_string(), l))
}

/// Parses durations like `250ms`, `10s`, `5m`, `24h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).map_or((s, ""), |i| s.split_at(i));
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 5m or 24h"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "" | "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        "d" => v * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_modes_parse() {
        assert_eq!(parse_fsync("always").unwrap(), FsyncMode::Always);
        assert_eq!(parse_fsync("none").unwrap(), FsyncMode::None);
        assert_eq!(parse_fsync("batch=5").unwrap(), FsyncMode::Batch(Duration::from_millis(5)));
        assert!(parse_fsync("batch=0").is_err());
        assert!(parse_fsync("sometimes").is_err());
    }

    #[test]
    fn queue_limits_parse() {
        let (q, l) = parse_queue_limit("ocr:max-per-key=1,rate=2.5").unwrap();
        assert_eq!((q.as_str(), l.max_per_key, l.rate_per_sec, l.burst), ("ocr", 1, 2.5, 2.5));
        let (q, l) = parse_queue_limit(":maxConcurrentPerKey=3,burst=10").unwrap();
        assert_eq!((q.as_str(), l.max_per_key, l.burst), ("default", 3, 10.0));
        for bad in ["ocr", "ocr:speed=1", "ocr:rate=-1", "ocr:max-per-key=x", "bad name!:rate=1"] {
            assert!(parse_queue_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
