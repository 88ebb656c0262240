//! Who may use the local API, and how much of it: the peer check (root, or
//! a member of the socket's group) and the bounds on open connections, in
//! total and per user.

use std::{
    collections::HashMap,
    fs,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::net::UnixStream;

use super::{server::ApiError, views::Response};

/// What one peer may cost the agent. A peer in the socket group can be
/// hostile (garbage, a huge request, a flood of silent connections); none of
/// that may stall the agent or the other clients, so every connection is
/// bounded in time and memory, and each user in the number it holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once, all users together.
    pub max_connections: usize,
    /// Connections open at once per non-root user (root can stop the agent
    /// anyway, and must always reach it during an incident).
    pub max_per_user: usize,
    /// Time a peer gets to send its request line.
    pub request_timeout: Duration,
    /// Time a peer gets to take each answer (or `watch` event) off the socket.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_user: 16,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Counts open connections, in total and per uid.
#[derive(Default)]
pub(super) struct Open {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// A connection's place in [`Open`], given back when it ends.
pub(super) struct Slot {
    open: Arc<Mutex<Open>>,
    uid: u32,
}

impl Slot {
    /// Takes a slot, or says which limit is reached.
    fn take(open: &Arc<Mutex<Open>>, uid: u32, limits: &Limits) -> Result<Self, String> {
        let mut o = open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if o.total >= limits.max_connections {
            return Err(format!(
                "the agent already serves {} connections; try again shortly",
                limits.max_connections
            ));
        }
        let mine = o.per_uid.get(&uid).copied().unwrap_or(0);
        if uid != 0 && mine >= limits.max_per_user {
            return Err(format!(
                "uid {uid} already holds {} connections to the agent; close some (stuck `rampwatch watch`?) and try again",
                limits.max_per_user
            ));
        }
        o.total += 1;
        *o.per_uid.entry(uid).or_default() += 1;
        Ok(Self {
            open: Arc::clone(open),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                o.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Resolves a group name or numeric gid from /etc/group.
pub fn resolve_group(name: &str) -> Result<u32, ApiError> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| ApiError::UnknownGroup(name.to_owned()))
}

/// A slot for a new connection, or `None` after telling the peer (without
/// waiting for it) which limit it hit.
pub(super) fn admit(stream: &UnixStream, open: &Arc<Mutex<Open>>, limits: &Limits) -> Option<Slot> {
    let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
    match Slot::take(open, uid, limits) {
        Ok(slot) => Some(slot),
        Err(message) => {
            tracing::debug!(uid, "API connection refused: {message}");
            if let Ok(mut line) = serde_json::to_vec(&Response::Error { message }) {
                line.push(b'\n');
                // Best effort and never blocking: the socket buffer of a new
                // connection takes one short line.
                let _ = stream.try_write(&line);
            }
            None
        }
    }
}

/// Whether a peer may use the API: root, or a member of the socket's group.
pub(super) fn allowed(uid: u32, gid: u32, pid: Option<i32>, group: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) = group else { return false };
    if gid == group {
        return true;
    }
    // SO_PEERCRED carries only the primary group; supplementary ones are in
    // the peer's /proc status.
    pid.and_then(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(str::to_owned))
        })
        .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(group)))
}
