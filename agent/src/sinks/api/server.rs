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
    AckView, ClientRow, FlowRow, MAX_ACK_BY, MAX_ACK_NOTE, Request, Response, StageView,
    StatusView, ViolationRow, WatchEvent,
};

/// An acknowledgement to record, with the caller's uid, and where the
/// engine task answers.
#[derive(Debug)]
pub struct AckCommand {
    pub id: String,
    pub by: String,
    pub note: String,
    pub uid: u32,
    pub reply: tokio::sync::oneshot::Sender<Result<AckView, String>>,
}

/// Where the API gets its answers; the live agent implements it over its
/// engine snapshot.
pub trait StateSource: Send + Sync + 'static {
    fn status(&self) -> StatusView;
    fn stage(&self) -> StageView;
    fn clients(&self) -> Vec<ClientRow>;
    fn flows(&self) -> Vec<FlowRow>;
    fn violations(&self, since: Option<Duration>) -> Vec<ViolationRow>;
    fn subscribe(&self) -> broadcast::Receiver<WatchEvent>;
    /// Where acknowledgements go; `None`: this source takes none.
    fn acks(&self) -> Option<tokio::sync::mpsc::Sender<AckCommand>> {
        None
    }
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
    /// Binds `path` (replacing a stale socket file), mode 0660, group `group`.
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
        chown(path, Some(0), group).map_err(perms)?;
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
    if let Request::Ack { id, by, note } = request {
        // Only root and the socket group got this far (`allowed`).
        let response = match acknowledge(state.as_ref(), id, by, note, cred.uid()).await {
            Ok(ack) => Response::Acked(ack),
            Err(message) => Response::Error { message },
        };
        return send(&mut write, &response).await;
    }
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

/// Checks an acknowledgement and hands it to the engine task.
async fn acknowledge(
    state: &dyn StateSource,
    id: String,
    by: String,
    note: String,
    uid: u32,
) -> Result<AckView, String> {
    let by = by.trim().to_owned();
    if by.is_empty() || by.chars().count() > MAX_ACK_BY || by.chars().any(char::is_control) {
        return Err(format!(
            "--by names who acknowledges: 1 to {MAX_ACK_BY} characters, no control characters"
        ));
    }
    if note.chars().count() > MAX_ACK_NOTE {
        return Err(format!("--note is at most {MAX_ACK_NOTE} characters"));
    }
    let valid_id =
        id.len() == 11 && id.starts_with('v') && id.bytes().skip(1).all(|b| b.is_ascii_hexdigit());
    if !valid_id {
        return Err(format!(
            "{id:?} is not a violation id (v and 10 hex digits); `rampwatch violations` lists them"
        ));
    }
    let Some(tx) = state.acks() else {
        return Err("this agent takes no acknowledgements".to_owned());
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let cmd = AckCommand {
        id,
        by,
        note,
        uid,
        reply,
    };
    let gone = || "the agent is stopping; acknowledge again once it runs".to_owned();
    tx.send(cmd).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
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
        // Answered by `handle` (it needs the caller's credentials).
        Request::Ack { .. } => Response::Error {
            message: "acknowledgements need a connection to the live agent".to_owned(),
        },
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
    use super::{acknowledge, allowed};

    #[tokio::test]
    async fn acknowledgements_are_checked_before_the_engine_sees_them() {
        let snap = crate::runtime::snapshot::Snapshot::new();
        let mut rx = snap.take_acks().expect("the receiver, once");
        assert!(snap.take_acks().is_none());
        let ack = |id: &str, by: &str, note: &str| {
            acknowledge(&*snap, id.into(), by.into(), note.into(), 1000)
        };
        for (id, by, note, want) in [
            ("v123", "alice", "", "is not a violation id"),
            ("v0123456789; rm", "alice", "", "is not a violation id"),
            ("vxyzxyzxyzx", "alice", "", "is not a violation id"),
            ("v0123456789", "  ", "", "--by names who"),
            ("v0123456789", "al\nice", "", "--by names who"),
            (
                "v0123456789",
                "alice",
                &"n".repeat(3000),
                "--note is at most",
            ),
        ] {
            let err = ack(id, by, note).await.expect_err(id);
            assert!(err.contains(want), "{id:?} {by:?}: {err}");
        }
        // A good one reaches the engine task with the caller's uid; its
        // answer is the caller's.
        let engine = tokio::spawn(async move {
            let cmd = rx.recv().await.expect("a command");
            assert_eq!(
                (cmd.id.as_str(), cmd.by.as_str(), cmd.uid),
                ("v0123456789", "alice", 1000)
            );
            cmd.reply
                .send(Err("no open violation has id v0123456789".into()))
                .expect("reply");
        });
        let err = ack("v0123456789", " alice ", "why")
            .await
            .expect_err("engine says no");
        assert!(err.contains("no open violation"), "{err}");
        engine.await.expect("engine task");
    }

    #[test]
    fn root_and_group_members_only() {
        assert!(allowed(0, 0, None, None));
        assert!(!allowed(1000, 1000, None, None));
        assert!(allowed(1000, 150, None, Some(150)));
        assert!(!allowed(1000, 1000, None, Some(150)));
    }
}
