//! The socket server side of the local API.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};
use tokio_util::sync::CancellationToken;

use super::views::{
    ClientRow, FlowRow, Request, Response, StageView, StatusView, ViolationRow, WatchEvent,
};

/// Where the API gets its answers; the live agent implements it over its
/// engine snapshot.
pub trait StateSource: Send + Sync + 'static {
    fn status(&self) -> StatusView;
    fn stage(&self) -> StageView;
    fn clients(&self) -> Vec<ClientRow>;
    fn flows(&self) -> Vec<FlowRow>;
    fn violations(&self, since: Option<Duration>) -> Vec<ViolationRow>;
    fn subscribe(&self) -> broadcast::Receiver<WatchEvent>;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot create the socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {path}: {source}; is another agent running? remove the stale socket or pass --socket"
    )]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set owner/mode of {path}: {source}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unknown group {0:?} for the API socket; pass an existing group name or gid to --socket-group"
    )]
    UnknownGroup(String),
}

pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    group: Option<u32>,
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

impl ApiServer {
    /// Binds `path` (replacing a stale socket file), mode 0660, owned by the
    /// agent's uid, group `group` when given.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<Self, ApiError> {
        let group = group.map(resolve_group).transpose()?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| ApiError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        // A socket file left by a crashed agent would make bind fail; a live
        // agent would still answer a connect, so only remove a dead one.
        // Never remove anything that is not a socket: a mistyped --socket
        // must not delete a file as root.
        let is_socket = fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
            path: path.to_owned(),
            source,
        })?;
        let perms = |source| ApiError::Permissions {
            path: path.to_owned(),
            source,
        };
        // The socket stays owned by the agent's own uid (root in the
        // DaemonSet), so the mode change needs no CAP_FOWNER and, without a
        // group, nothing needs CAP_CHOWN; a group other than the agent's own
        // needs CAP_CHOWN for the group change alone.
        if group.is_some() {
            chown(path, None, group).map_err(perms)?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(perms)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            group,
        })
    }

    /// Serves until `cancel`; removes the socket file on the way out.
    pub async fn serve(self, state: Arc<dyn StateSource>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let state = Arc::clone(&state);
                        let cancel = cancel.clone();
                        let group = self.group;
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, state, group, cancel).await {
                                tracing::debug!(error = %e, "API connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off rather
                        // than spin on accept.
                        tracing::warn!(error = %e, "accepting an API connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a peer may use the API: root, or a member of the socket's group.
fn allowed(uid: u32, gid: u32, pid: Option<i32>, group: Option<u32>) -> bool {
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

async fn handle(
    stream: UnixStream,
    state: Arc<dyn StateSource>,
    group: Option<u32>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    if !allowed(cred.uid(), cred.gid(), cred.pid(), group) {
        let msg = Response::Error {
            message: format!(
                "permission denied: uid {} is neither root nor in the agent's socket group; \
                 run as root or ask for membership of that group",
                cred.uid()
            ),
        };
        return send(&mut write, &msg).await;
    }
    let request = match read_request(read).await? {
        Ok(r) => r,
        Err(message) => return send(&mut write, &Response::Error { message }).await,
    };
    let response = match answer(request, state.as_ref()) {
        Some(response) => response,
        None => {
            let mut events = state.subscribe();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    ev = events.recv() => match ev {
                        Ok(ev) => send(&mut write, &Response::Watch(ev)).await?,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "a `watch` client fell behind");
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                }
            }
        }
    };
    send(&mut write, &response).await
}

/// Longest request line read from a peer; the rest is never read.
pub const MAX_REQUEST_LINE: u64 = 64 * 1024;

/// Reads and decodes a peer's request line (at most [`MAX_REQUEST_LINE`]
/// bytes): `Ok(Err(message))` is the error to send back.
pub async fn read_request(
    read: impl AsyncRead + Unpin,
) -> std::io::Result<Result<Request, String>> {
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_LINE);
    reader.read_line(&mut line).await?;
    Ok(serde_json::from_str::<Request>(line.trim()).map_err(|e| format!("bad request: {e}")))
}

/// The answer to `request`; `None` for `watch`, which streams instead.
pub fn answer(request: Request, state: &dyn StateSource) -> Option<Response> {
    Some(match request {
        Request::Status => Response::Status(state.status()),
        Request::Stage => Response::Stage(state.stage()),
        Request::Clients => Response::Clients {
            clients: state.clients(),
        },
        Request::Flows => Response::Flows {
            flows: state.flows(),
        },
        Request::Violations { since_secs } => Response::Violations {
            violations: state.violations(since_secs.map(Duration::from_secs)),
        },
        Request::Watch => return None,
    })
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn root_and_group_members_only() {
        assert!(allowed(0, 0, None, None));
        assert!(!allowed(1000, 1000, None, None));
        assert!(allowed(1000, 150, None, Some(150)));
        assert!(!allowed(1000, 1000, None, Some(150)));
    }
}
