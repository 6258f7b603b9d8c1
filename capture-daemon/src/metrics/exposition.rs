//! The Prometheus text exposition format, as the daemon writes it.

use std::fmt::Write as _;

/// Builds the text exposition format: `# HELP`/`# TYPE` once per metric, then all its samples
/// together (the format wants each metric's lines in one group, whatever order they come in).
#[derive(Default)]
pub struct Exposition {
    /// Per metric, in order of first use: its name and its lines so far.
    families: Vec<(&'static str, String)>,
}

impl Exposition {
    pub fn sample(
        &mut self,
        name: &'static str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let i = match self.families.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                self.families.push((name, format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")));
                self.families.len() - 1
            }
        };
        let out = &mut self.families[i].1;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    pub fn finish(self) -> String {
        self.families.into_iter().map(|(_, lines)| lines).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::client::{label, parse};

    #[test]
    fn exposition_round_trips_through_the_parser() {
        let mut e = Exposition::default();
        e.sample(
            "capture_x_total",
            "counter",
            "X.",
            &[("interface", "eth0"), ("target", "a\"b")],
            3.0,
        );
        e.sample("capture_up", "gauge", "Up.", &[], 1.0);
        e.sample("capture_x_total", "counter", "X.", &[("interface", "eth1")], 4.0);
        let text = e.finish();
        assert_eq!(text.matches("# TYPE capture_x_total counter").count(), 1);
        // Each metric's lines stay together, though eth1's sample came after capture_up.
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .collect();
        assert_eq!(names, ["capture_x_total", "capture_x_total", "capture_up"], "{text}");
        let samples = parse(&text);
        assert_eq!(samples["capture_up"], 1.0);
        let key = samples.keys().find(|k| k.contains("eth0")).unwrap();
        assert_eq!(label(key, "interface").as_deref(), Some("eth0"));
        assert_eq!(label(key, "target").as_deref(), Some("a\"b"), "unescaped");
        assert_eq!(samples[key], 3.0);
    }
}
