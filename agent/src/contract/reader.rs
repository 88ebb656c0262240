//! Typed reads from the YAML tree that record a diagnostic instead of
//! failing, so one pass reports every problem in the file.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{
    error::Diagnostic,
    timefmt,
    yaml::{Kind, Node, Pos},
};
use crate::{event::Nanos, identity::Fingerprint};

/// Collects diagnostics while the tree is read.
#[derive(Default)]
pub(crate) struct Reader {
    pub diags: Vec<Diagnostic>,
}

/// The known fields of one mapping. Fields whose value is null count as
/// absent.
pub(crate) struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    map: HashMap<&'static str, &'n Node>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.map.get(key).copied()
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn scalar_text(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Scalar { text, .. } if !node.is_null() => Some(text),
        _ => None,
    }
}

/// Quotes a user value in a message, cut short so a mis-pasted secret or
/// a huge line does not flood the output.
pub(crate) fn shown(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("`{s}`")
}

impl Reader {
    pub fn err(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            path: path.to_owned(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    /// A mapping with only `allowed` keys; reports unknown, duplicate and
    /// non-string keys.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&'static str],
    ) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.err(
                path,
                node.pos,
                format!("expected a mapping of fields, found {}", node.describe()),
            );
            return None;
        };
        let mut map = HashMap::new();
        let mut seen: Vec<&str> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(name) = scalar_text(key) else {
                self.err(path, key.pos, "field names must be plain strings");
                continue;
            };
            let Some(known) = allowed.iter().copied().find(|a| *a == name) else {
                self.err(
                    &join(path, name),
                    key.pos,
                    format!(
                        "unknown field {}; expected one of: {}",
                        shown(name),
                        allowed.join(", ")
                    ),
                );
                continue;
            };
            if seen.contains(&known) {
                self.err(
                    &join(path, name),
                    key.pos,
                    format!("field `{known}` is given twice; keep one"),
                );
                continue;
            }
            seen.push(known);
            if !value.is_null() {
                map.insert(known, value);
            }
        }
        Some(Fields {
            pos: node.pos,
            path: path.to_owned(),
            map,
        })
    }

    /// A field that must be present.
    pub fn required<'n>(&mut self, fields: &Fields<'n>, key: &str) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() {
            self.err(
                &fields.path(key),
                fields.pos,
                format!("missing required field `{key}`"),
            );
        }
        node
    }

    /// Any non-null scalar, as its source text.
    pub fn text<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        let text = scalar_text(node);
        if text.is_none() {
            self.err(
                path,
                node.pos,
                format!("expected a string, found {}", node.describe()),
            );
        }
        text
    }

    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.err(
                    path,
                    node.pos,
                    format!("expected a list, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A list of items read by `item`; the item reader gets each item's path.
    pub fn list_of<'n, T>(
        &mut self,
        node: Option<&'n Node>,
        path: &str,
        mut item: impl FnMut(&mut Self, &'n Node, &str) -> Option<T>,
    ) -> Vec<T> {
        let Some(items) = node.and_then(|n| self.list(n, path)) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| item(self, n, &index(path, i)))
            .collect()
    }

    /// A plain (unquoted) number's text; quoted numbers are strings in YAML.
    fn number_text<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.kind {
            Kind::Scalar { text, plain: true } if !node.is_null() => Some(text),
            _ => {
                self.err(
                    path,
                    node.pos,
                    format!("expected a number, found {}", describe_value(node)),
                );
                None
            }
        }
    }

    /// A plain `true` or `false` (YAML 1.1 spellings such as `yes` are
    /// rejected: they read as strings to half the tools that see the file).
    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar { text, plain: true } if text == "true" => Some(true),
            Kind::Scalar { text, plain: true } if text == "false" => Some(false),
            _ => {
                self.err(
                    path,
                    node.pos,
                    format!("expected true or false, found {}", describe_value(node)),
                );
                None
            }
        }
    }

    pub fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        let text = self.number_text(node, path)?;
        match text.parse::<i64>() {
            Ok(p) if (1..=65535).contains(&p) => u16::try_from(p).ok(),
            _ => {
                self.err(
                    path,
                    node.pos,
                    format!(
                        "{} is not a port; ports are whole numbers from 1 to 65535",
                        shown(text)
                    ),
                );
                None
            }
        }
    }

    /// `ports:`; `None` when absent (any port). Duplicates are reported.
    pub fn ports(&mut self, node: Option<&Node>, path: &str) -> Option<Vec<u16>> {
        let node = node?;
        let items = self.list(node, path)?;
        let mut ports: Vec<u16> = Vec::with_capacity(items.len());
        for (i, n) in items.iter().enumerate() {
            let p = index(path, i);
            if let Some(port) = self.port(n, &p) {
                if ports.contains(&port) {
                    self.err(&p, n.pos, format!("port {port} is listed twice"));
                } else {
                    ports.push(port);
                }
            }
        }
        if items.is_empty() {
            self.err(
                path,
                node.pos,
                "an empty port list matches nothing; list ports or leave the field out to match any port",
            );
        }
        Some(ports)
    }

    pub fn non_negative_f64(&mut self, node: &Node, path: &str) -> Option<f64> {
        let text = self.number_text(node, path)?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
            Ok(v) if v < 0.0 => {
                self.err(
                    path,
                    node.pos,
                    format!("must not be negative, found {}", shown(text)),
                );
                None
            }
            _ => {
                self.err(path, node.pos, format!("{} is not a number", shown(text)));
                None
            }
        }
    }

    pub fn non_negative_u64(&mut self, node: &Node, path: &str) -> Option<u64> {
        let text = self.number_text(node, path)?;
        if let Ok(v) = text.parse::<u64>() {
            return Some(v);
        }
        let message = match text.parse::<f64>() {
            Ok(v) if v < 0.0 => format!("must not be negative, found {}", shown(text)),
            Ok(_) => format!("must be a whole number, found {}", shown(text)),
            Err(_) => format!("{} is not a number", shown(text)),
        };
        self.err(path, node.pos, message);
        None
    }

    pub fn time(&mut self, node: &Node, path: &str) -> Option<Nanos> {
        let text = self.text(node, path)?;
        timefmt::parse_rfc3339(text)
            .map_err(|e| self.err(path, node.pos, e.to_string()))
            .ok()
    }

    pub fn duration(&mut self, node: &Node, path: &str) -> Option<Nanos> {
        let text = self.text(node, path)?;
        timefmt::parse_duration(text)
            .map_err(|e| self.err(path, node.pos, e.to_string()))
            .ok()
    }

    pub fn fingerprint(&mut self, node: &Node, path: &str) -> Option<Fingerprint> {
        let text = self.text(node, path)?;
        // The value is not echoed: a mis-pasted raw secret must not reach
        // the terminal or CI logs.
        text.parse::<Fingerprint>()
            .map_err(|e| self.err(path, node.pos, format!("not a fingerprint: {e}")))
            .ok()
    }

    /// A CIDR, or a single address (as /32 or /128).
    pub fn network(&mut self, node: &Node, path: &str) -> Option<IpNet> {
        let text = self.text(node, path)?;
        let parsed = parse_net(text);
        if parsed.is_none() {
            self.err(
                path,
                node.pos,
                format!(
                    "{} is not a CIDR or IP address; write it like \"10.20.0.0/16\", \"10.20.0.5\" or \"fd00::/64\"",
                    shown(text)
                ),
            );
        }
        parsed
    }

    /// A name others refer to: letters, digits, `.`, `_`, `-`, up to 63
    /// characters, starting with a letter or digit. `reserved` names are
    /// labels rampwatch itself uses.
    pub fn name(&mut self, node: &Node, path: &str, reserved: &[&str]) -> Option<Arc<str>> {
        let text = self.text(node, path)?;
        let valid = text.len() <= 63
            && text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            self.err(
                path,
                node.pos,
                format!(
                    "{} is not a valid name; use up to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
                    shown(text)
                ),
            );
            return None;
        }
        if reserved.contains(&text) {
            self.err(
                path,
                node.pos,
                format!("the name `{text}` is reserved: rampwatch uses it as a label in reports; pick another"),
            );
            return None;
        }
        Some(Arc::from(text))
    }
}

pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn describe_value(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar { text, plain: false } => format!("the string {}", shown(text)),
        _ => node.describe().to_owned(),
    }
}
