//! `weak_tls`: TLS to an endpoint whose class sets `minTlsVersion` or
//! `forbiddenCiphers`, negotiated below that version or with a forbidden
//! suite. From the ServerHello; when only the ClientHello was seen, from the
//! client's best offer (its highest version; a cipher problem only when every
//! suite it offered is forbidden). Judged once per flow.

use super::{
    Ctx,
    view::{ClassView, EndpointRef, Identity},
    violations::{Finding, Kind},
};
use crate::flow::{TlsFacts, TlsVersion, facts::CipherSuite};

/// "TLS 1.1", "SSL 3".
pub fn label(v: TlsVersion) -> String {
    match v {
        TlsVersion::Ssl2 => "SSL 2".to_owned(),
        TlsVersion::Ssl3 => "SSL 3".to_owned(),
        v => format!("TLS {}", v.as_str()),
    }
}

pub fn check(ctx: &Ctx<'_>, tls: &TlsFacts, m: EndpointRef, id: &Identity) -> Option<Finding> {
    let e = m.endpoint()?;
    let class = ctx.view.class_of(e)?;
    let detail = match &tls.server_hello {
        Some(sh) => negotiated(class, sh.version, sh.cipher),
        None => offered(class, tls)?,
    }?;
    Some(ctx.finding(Kind::WeakTls, Some(e), id.client, detail, 1))
}

fn too_old(class: &ClassView, v: Option<TlsVersion>) -> Option<TlsVersion> {
    match (v, class.min_tls) {
        (Some(v), Some(min)) if v < min => Some(v),
        _ => None,
    }
}

fn negotiated(
    class: &ClassView,
    version: Option<TlsVersion>,
    cipher: CipherSuite,
) -> Option<String> {
    let old = too_old(class, version);
    if old.is_none() && !class.forbids_id(cipher.0) {
        return None;
    }
    let bad_cipher = cipher.name().filter(|c| class.forbids(c).is_some());
    match (old, bad_cipher) {
        (None, None) => None,
        (Some(v), None) => Some(label(v)),
        (Some(v), Some(c)) => Some(format!("{} with {c}", label(v))),
        (None, Some(c)) => Some(match version {
            Some(v) => format!("{} with {c}", label(v)),
            None => c.to_owned(),
        }),
    }
}

fn offered(class: &ClassView, tls: &TlsFacts) -> Option<Option<String>> {
    let ch = tls.client_hello.as_ref()?;
    let old = too_old(class, ch.max_version);
    let mut named = ch
        .cipher_suites
        .iter()
        .filter(|c| c.name().is_some())
        .peekable();
    let all_forbidden =
        named.peek().is_some() && class.forbids_any() && named.all(|c| class.forbids_id(c.0));
    Some(match (old, all_forbidden) {
        (None, false) => None,
        (Some(v), false) => Some(format!("{} at best (ClientHello)", label(v))),
        (Some(v), true) => Some(format!(
            "{} at best, only forbidden ciphers (ClientHello)",
            label(v)
        )),
        (None, true) => Some("only forbidden ciphers offered (ClientHello)".to_owned()),
    })
}
