//! `quota_overshoot`: an identified client's requests on an endpoint beyond
//! the active stage's quota, a token bucket of `burst` refilled at
//! `requestsPerSecond` (event time). No quota for the pair in the active
//! stage means quota 0. Before the first stage starts the ramp is not in
//! force and no quota is judged (requests are still counted for rates).
//! Every request that finds no token counts; the detail reports the
//! observed rate and the quota.

use std::sync::Arc;

use super::{
    Ctx,
    rates::Rates,
    violations::{Finding, Kind},
};
use crate::event::Nanos;

/// Accounts `n` requests of `client` on `endpoint` at `t`.
pub fn check(
    ctx: &Ctx<'_>,
    rates: &mut Rates,
    client: usize,
    endpoint: usize,
    n: u64,
    t: Nanos,
) -> Option<Finding> {
    let (Some(cname), Some(ename)) = (
        ctx.view.client_name(Some(client)),
        ctx.view.endpoint_name(Some(endpoint)),
    ) else {
        return None;
    };
    let quota = ctx.view.quota(ctx.stage, client, endpoint);
    let bucket = rates.bucket(cname, ename, quota, ctx.quota_gen, t);
    let over = bucket.take(n, t);
    if over == 0 || ctx.stage.is_none() {
        return None;
    }
    let rate = bucket.rate(t);
    let key = (
        (rate * 10.0).round() as i64,
        (quota.requests_per_second * 10.0).round() as i64,
    );
    let detail = match &bucket.detail {
        Some((k, d)) if *k == key => d.clone(),
        _ => {
            // Written in one string: a burst changes the rate with nearly
            // every request, and three `format!`s each time showed.
            let mut d = String::with_capacity(48);
            write_rate(&mut d, rate);
            d.push_str(" req/s over quota ");
            write_rate(&mut d, quota.requests_per_second);
            bucket.detail = Some((key, d.clone()));
            d
        }
    };
    Some(ctx.finding_named(
        Kind::QuotaOvershoot,
        Arc::clone(ename),
        Arc::clone(cname),
        detail,
        over,
    ))
}

/// Whole numbers without decimals, else one decimal.
pub fn fmt_rate(r: f64) -> String {
    let mut s = String::new();
    write_rate(&mut s, r);
    s
}

/// [`fmt_rate`], appended to `out`.
fn write_rate(out: &mut String, r: f64) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = if (r - r.round()).abs() < 0.05 {
        write!(out, "{}", r.round() as i64)
    } else {
        write!(out, "{r:.1}")
    };
}
