//! Log levels as people type them. env_logger reads a word that is not one of its five levels
//! as a module name: `warning` would log nothing but a module called "warning", that is
//! nothing at all. Levels are read here instead, with the usual synonyms, and anything else is
//! an error that lists what is accepted.

use std::io::Write as _;

use log::LevelFilter;

/// What [`parse_level`] accepts, as the error message lists it.
const ACCEPTED: &str = "off, error, warn, info, debug or trace (also accepted: none; err, crit, \
                        critical, alert, emerg, fatal; warning; notice; verbose)";

#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("unknown log level {0:?}: use {ACCEPTED}")]
    Unknown(String),
    #[error("RUST_LOG={spec:?}: {directive:?}: unknown log level {level:?}: use {ACCEPTED}")]
    InFilter { spec: String, directive: String, level: String },
    #[error(
        "RUST_LOG={spec:?}: {directive:?} is neither a log level nor a module path (use LEVEL, \
         MODULE or MODULE=LEVEL, separated by commas; levels: {ACCEPTED})"
    )]
    BadDirective { spec: String, directive: String },
}

/// Sets up logging to stderr: `level` if given, else `default` (a filter such as
/// `warn,capture_daemon::daemon::iface=info`); `RUST_LOG`, if set, is added on top.
pub fn init(level: Option<LevelFilter>, default: &str) -> Result<(), LevelError> {
    let mut builder = env_logger::Builder::new();
    match level {
        Some(level) => builder.filter_level(level),
        None => builder.parse_filters(default),
    };
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&normalize_filters(&spec)?);
    }
    // Under systemd (journald on stderr) the journal adds timestamps; give it the priority
    // as a "<N>" prefix instead so `journalctl -p warning` works.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|f, record| {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(f, "<{prio}>{}", record.args())
        });
    }
    builder.init();
    Ok(())
}

/// A log level by its name or a usual synonym (syslog's, and a few others), any case.
pub fn parse_level(s: &str) -> Result<LevelFilter, LevelError> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => LevelFilter::Off,
        "error" | "err" | "crit" | "critical" | "alert" | "emerg" | "fatal" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" | "notice" => LevelFilter::Info,
        "debug" | "verbose" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return Err(LevelError::Unknown(s.to_owned())),
    })
}

/// `RUST_LOG` (`LEVEL`, `MODULE` and `MODULE=LEVEL`, separated by commas, then an optional
/// `/filter`) with each level read by [`parse_level`] and written as env_logger reads it. A
/// bare word that is no level must look like a module path (`capture_daemon::writer`).
pub fn normalize_filters(spec: &str) -> Result<String, LevelError> {
    let (directives, filter) = match spec.split_once('/') {
        Some((d, f)) => (d, Some(f)),
        None => (spec, None),
    };
    let mut out = Vec::new();
    for directive in directives.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bad =
            || LevelError::BadDirective { spec: spec.to_owned(), directive: directive.to_owned() };
        let module_path = |m: &str| {
            !m.is_empty()
                && m.split("::").all(|part| {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
        };
        match directive.split_once('=') {
            Some((module, level)) => {
                let module = module.trim();
                if !module_path(module) {
                    return Err(bad());
                }
                if level.trim().is_empty() {
                    // env_logger's `module=`: everything of that module.
                    out.push(module.to_owned());
                    continue;
                }
                let level = parse_level(level).map_err(|_| LevelError::InFilter {
                    spec: spec.to_owned(),
                    directive: directive.to_owned(),
                    level: level.trim().to_owned(),
                })?;
                out.push(format!("{module}={level}"));
            }
            None => match parse_level(directive) {
                Ok(level) => out.push(level.to_string()),
                Err(_) if module_path(directive) => out.push(directive.to_owned()),
                Err(_) => return Err(bad()),
            },
        }
    }
    let mut normalized = out.join(",");
    if let Some(f) = filter {
        normalized.push('/');
        normalized.push_str(f);
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_their_synonyms() {
        for (words, level) in [
            (&["off", "none", "NONE"][..], LevelFilter::Off),
            (&["error", "err", "crit", "critical", "alert", "emerg", "fatal"], LevelFilter::Error),
            (&["warn", "warning", "Warning", " WARN "], LevelFilter::Warn),
            (&["info", "notice"], LevelFilter::Info),
            (&["debug", "verbose"], LevelFilter::Debug),
            (&["trace"], LevelFilter::Trace),
        ] {
            for w in words {
                assert_eq!(parse_level(w).unwrap(), level, "{w}");
            }
        }
        for bad in ["", "warnings", "loud", "3", "info,debug"] {
            let e = parse_level(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown log level {bad:?}")), "{e}");
            assert!(e.contains("off, error, warn, info, debug or trace"), "{e}");
        }
    }

    #[test]
    fn rust_log_levels_are_read_the_same_way() {
        let n = |s| normalize_filters(s).unwrap();
        assert_eq!(n("warning"), "WARN");
        assert_eq!(n("capture_daemon=verbose, aya=err"), "capture_daemon=DEBUG,aya=ERROR");
        assert_eq!(n("info,capture_daemon::writer"), "INFO,capture_daemon::writer");
        assert_eq!(n("capture_daemon=/rotat"), "capture_daemon/rotat");
        assert_eq!(n(""), "");
        let e = normalize_filters("capture_daemon=loud").unwrap_err().to_string();
        assert!(e.contains("\"capture_daemon=loud\": unknown log level \"loud\""), "{e}");
        let e = normalize_filters("warn,my-module=info").unwrap_err().to_string();
        assert!(e.contains("neither a log level nor a module path"), "{e}");
        assert!(normalize_filters("what ever").is_err());
    }
}
