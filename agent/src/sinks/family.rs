//! Metric families with one series per (endpoint, client)-like label set,
//! written straight into the text exposition format.
//!
//! Why not the `prometheus` crate's vectors for these: its `gather` builds a
//! protobuf message per series on every scrape (cloning every label name and
//! value), sorts them, and only then encodes; at 10k series that took
//! ~10 ms a scrape here, most of it allocation and copying. These families
//! keep each series under its already-escaped label text in a sorted map, so
//! a scrape is one pass of string appends. The output is what the crate
//! writes for the same series (labels sorted by name, values as `f64`
//! Display), so names, labels and alert rules do not change. Everything
//! with a handful of series stays in the crate's registry.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Mutex, MutexGuard},
};

/// `counter` or `gauge`: the `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One family: name, help, label names and its series.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Label names sorted, with the position of each in the caller's order.
    labels: Vec<(&'static str, usize)>,
    /// Escaped label text (`client="a",endpoint="b"`) → value.
    series: Mutex<BTreeMap<Box<str>, f64>>,
}

/// A series of a family, as `with_label_values` names it.
pub struct Series<'a> {
    family: &'a Family,
    key: String,
}

impl Family {
    pub fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[&'static str],
    ) -> Self {
        let mut sorted: Vec<(&'static str, usize)> =
            labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
        sorted.sort_unstable();
        Self {
            name,
            help,
            kind,
            labels: sorted,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The series with these label values, in the order the family was
    /// declared with. A wrong number of values names no series: its
    /// updates are dropped (and debug builds assert).
    pub fn with_label_values(&self, values: &[&str]) -> Series<'_> {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let mut key = String::new();
        if values.len() == self.labels.len() {
            for (n, (label, at)) in self.labels.iter().enumerate() {
                if n > 0 {
                    key.push(',');
                }
                key.push_str(label);
                key.push_str("=\"");
                escape_into(&mut key, values[*at]);
                key.push('"');
            }
        }
        Series { family: self, key }
    }

    /// Removes every series (a gauge family rebuilt each tick).
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Appends the family in the text format; nothing when it has no
    /// series (as the crate does for an empty vector).
    pub fn encode_into(&self, out: &mut String) {
        let series = self.lock();
        if series.is_empty() {
            return;
        }
        out.push_str("# HELP ");
        out.push_str(self.name);
        out.push(' ');
        for c in self.help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push_str("\n# TYPE ");
        out.push_str(self.name);
        out.push_str(match self.kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
        for (labels, value) in series.iter() {
            out.push_str(self.name);
            out.push('{');
            out.push_str(labels);
            out.push_str("} ");
            let _ = writeln!(out, "{value}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Box<str>, f64>> {
        // A panic while holding the lock leaves a map of plain numbers:
        // still consistent, so keep serving it.
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Series<'_> {
    pub fn inc_by(&self, n: u64) {
        self.update(|v| *v += n as f64);
    }

    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn set(&self, value: f64) {
        self.update(|v| *v = value);
    }

    pub fn get(&self) -> f64 {
        self.family
            .lock()
            .get(self.key.as_str())
            .copied()
            .unwrap_or(0.0)
    }

    fn update(&self, f: impl FnOnce(&mut f64)) {
        if self.key.is_empty() && !self.family.labels.is_empty() {
            return;
        }
        let mut series = self.family.lock();
        match series.get_mut(self.key.as_str()) {
            Some(v) => f(v),
            None => {
                let mut v = 0.0;
                f(&mut v);
                series.insert(self.key.as_str().into(), v);
            }
        }
    }
}

/// A label value in the text format: backslash, double quote and line feed
/// escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder as _, IntCounterVec, Opts, Registry, TextEncoder};

    use super::*;

    /// The same series encode byte for byte as the `prometheus` crate
    /// encodes them, so a scrape reads the same either way.
    #[test]
    fn encodes_as_the_prometheus_crate_does() {
        let ours = Family::new(
            "rw_test_total",
            "Help with a \\ backslash.",
            Kind::Counter,
            &["endpoint", "client"],
        );
        let registry = Registry::new();
        let theirs = IntCounterVec::new(
            Opts::new("rw_test_total", "Help with a \\ backslash."),
            &["endpoint", "client"],
        )
        .expect("valid");
        registry
            .register(Box::new(theirs.clone()))
            .expect("register");
        for (e, c, n) in [
            ("orders", "acme", 3),
            ("ledger", "zeta", 1),
            ("orders", "a\"b\\c\nd", 7),
            ("ledger", "acme", 12_345_678),
        ] {
            ours.with_label_values(&[e, c]).inc_by(n);
            theirs.with_label_values(&[e, c]).inc_by(n);
        }
        ours.with_label_values(&["orders", "acme"]).inc();
        theirs.with_label_values(&["orders", "acme"]).inc();
        let mut want = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut want)
            .expect("encode");
        let mut got = String::new();
        ours.encode_into(&mut got);
        assert_eq!(got, String::from_utf8(want).expect("utf-8"));
        assert_eq!(ours.with_label_values(&["orders", "acme"]).get(), 4.0);
        assert_eq!(ours.len(), 4);
        assert!(!ours.is_empty());
    }

    #[test]
    fn gauges_set_reset_and_an_empty_family_writes_nothing() {
        let g = Family::new("rw_gauge", "G.", Kind::Gauge, &["endpoint", "client"]);
        g.with_label_values(&["e", "c"]).set(2.5);
        let mut out = String::new();
        g.encode_into(&mut out);
        assert_eq!(
            out,
            "# HELP rw_gauge G.\n# TYPE rw_gauge gauge\nrw_gauge{client=\"c\",endpoint=\"e\"} 2.5\n"
        );
        g.reset();
        let mut out = String::new();
        g.encode_into(&mut out);
        assert!(out.is_empty());
    }
}
