//! `stale_credential`: a request whose credential should no longer be in
//! use, for the first of these reasons (one finding per request):
//!
//! 1. a JWT past its `exp`, or before its `nbf`, beyond [`CLOCK_SKEW`];
//! 2. older (judge time − issue time) than the active stage's
//!    `credentialMaxAge`;
//! 3. issued before the active stage began when it says
//!    `rotateOnStageStart: true`;
//! 4. a JWT signed with a key (`kid`) the active stage's `signingKeys` do
//!    not list.
//!
//! The issue time of a listed fingerprint is the contract's `issuedAt` (the
//! operator's statement wins over what the token claims); of a client
//! named by JWT claims, the token's `iat`. A JWT client whose token has no
//! `iat` cannot show its age, so a stage with an age or rotation term
//! judges it stale.

use super::{
    Ctx, fmt_duration,
    view::{Identity, StageTerms, Via},
    violations::{Finding, Kind},
};
use crate::{contract::format_rfc3339, event::Nanos, identity::TokenFacts};

/// Leeway for the clocks of the token issuer and this node: a token is
/// expired once `exp` is more than this in the past, not yet valid while
/// `nbf` is more than this in the future.
pub const CLOCK_SKEW: Nanos = 60 * 1_000_000_000;

pub fn check(ctx: &Ctx<'_>, endpoint: Option<usize>, id: &Identity) -> Option<Finding> {
    if !matches!(id.via, Via::Credential | Via::Jwt) {
        return None;
    }
    let now = ctx.judge_time;
    let detail = id.token.and_then(|t| validity(&t, now)).or_else(|| {
        let stage = ctx.stage_view()?;
        let issued = match id.via {
            Via::Jwt => id.token.and_then(|t| t.issued_at),
            _ => {
                ctx.view
                    .directory
                    .credentials
                    .get(&id.credential?)?
                    .issued_at
            }
        };
        age(stage, issued, now)
            .or_else(|| rotation(stage, issued))
            .or_else(|| signing_key(stage, id.token.as_ref()))
    })?;
    Some(ctx.finding(Kind::StaleCredential, endpoint, id.client, detail, 1))
}

/// `exp` passed or `nbf` ahead, beyond the leeway.
fn validity(token: &TokenFacts, now: Nanos) -> Option<String> {
    if let Some(exp) = token.expires_at
        && now > exp.saturating_add(CLOCK_SKEW)
    {
        return Some(format!(
            "expired at {} ({} ago; leeway {})",
            format_rfc3339(exp),
            fmt_duration(now - exp),
            fmt_duration(CLOCK_SKEW)
        ));
    }
    if let Some(nbf) = token.not_before
        && nbf > now.saturating_add(CLOCK_SKEW)
    {
        return Some(format!(
            "not valid before {} (in {}; leeway {})",
            format_rfc3339(nbf),
            fmt_duration(nbf - now),
            fmt_duration(CLOCK_SKEW)
        ));
    }
    None
}

fn age(stage: &StageTerms, issued: Option<Nanos>, now: Nanos) -> Option<String> {
    let max = stage.credential_max_age?;
    let Some(issued) = issued else {
        return Some(format!(
            "token has no iat, so its age is unknown; stage `{}` allows at most {}",
            stage.name,
            fmt_duration(max)
        ));
    };
    let age = now - issued;
    (age > max).then(|| {
        format!(
            "credential {} old, max {}",
            fmt_duration(age),
            fmt_duration(max)
        )
    })
}

fn rotation(stage: &StageTerms, issued: Option<Nanos>) -> Option<String> {
    if !stage.rotate_on_stage_start {
        return None;
    }
    let started = format_rfc3339(stage.starts_at);
    match issued {
        None => Some(format!(
            "token has no iat; stage `{}` requires credentials issued after it began ({started})",
            stage.name
        )),
        Some(t) if t < stage.starts_at => Some(format!(
            "issued at {}, before stage `{}` began ({started}); it requires rotated credentials",
            format_rfc3339(t),
            stage.name
        )),
        Some(_) => None,
    }
}

fn signing_key(stage: &StageTerms, token: Option<&TokenFacts>) -> Option<String> {
    if stage.signing_keys.is_empty() {
        return None;
    }
    let token = token?;
    let pinned = stage.signing_keys.join(", ");
    match token.key_id {
        None => Some(format!(
            "token names no signing key (kid); stage `{}` accepts only {pinned}",
            stage.name
        )),
        Some(kid) if !stage.signing_keys.iter().any(|k| kid.is(k)) => Some(format!(
            "signed with key `{kid}`, not one stage `{}` accepts ({pinned})",
            stage.name
        )),
        Some(_) => None,
    }
}
