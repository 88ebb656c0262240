//! `stale_credential`: a request with a known credential older (judge time
//! − `issuedAt`) than the active stage's `credentialMaxAge`: it was not
//! rotated when the stage began.

use super::{
    Ctx, fmt_duration,
    view::Identity,
    violations::{Finding, Kind},
};

pub fn check(ctx: &Ctx<'_>, endpoint: Option<usize>, id: &Identity) -> Option<Finding> {
    let max = ctx.stage_view()?.credential_max_age?;
    let issued = ctx
        .view
        .directory
        .credentials
        .get(&id.credential?)?
        .issued_at?;
    let age = ctx.judge_time - issued;
    if age <= max {
        return None;
    }
    let detail = format!(
        "credential {} old, max {}",
        fmt_duration(age),
        fmt_duration(max)
    );
    Some(ctx.finding(Kind::StaleCredential, endpoint, id.client, detail, 1))
}
