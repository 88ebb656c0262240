//! The socket server side of the local API.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use super::{
    admission::{Limits, Open, admit, allowed, resolve_group},
    views::{
        AckView, ClientRow, FlowRow, MAX_ACK_BY, MAX_ACK_NOTE, ReadinessView, Request, Response,
        StageView, StatusView, ViolationRow, WatchEvent,
    },
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

/// A `rampwatch flows` request, to the engine task: the list is built from
/// the flow table when someone asks, not every tick for every flow (at
/// 100k flows that list was tens of MiB rebuilt each second).
#[derive(Debug)]
pub struct FlowsCommand {
    pub reply: tokio::sync::oneshot::Sender<Vec<FlowRow>>,
}

/// Where the API gets its answers; the live agent implements it over its
/// engine snapshot.
pub trait StateSource: Send + Sync + 'static {
    fn status(&self) -> StatusView;
    fn stage(&self) -> StageView;
    fn clients(&self) -> Vec<ClientRow>;
    fn violations(&self, since: Option<Duration>) -> Vec<ViolationRow>;
    fn subscribe(&self) -> broadcast::Receiver<WatchEvent>;
    /// Readiness for `stage` (default: the next one); `Err` is the sentence
    /// to show (unknown stage, no next stage).
    fn readiness(&self, stage: Option<&str>) -> Result<ReadinessView, String>;

    /// Where acknowledgements go; `None`: this source takes none.
    fn acks(&self) -> Option<tokio::sync::mpsc::Sender<AckCommand>> {
        None
    }

    /// Where `flows` requests go; `None`: this source lists no flows.
    fn flow_requests(&self) -> Option<tokio::sync::mpsc::Sender<FlowsCommand>> {
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
    limits: Limits,
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
            limits: Limits::default(),
        })
    }

    /// Replaces the default [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves until `cancel`; removes the socket file on the way out.
    pub async fn serve(self, state: Arc<dyn StateSource>, cancel: CancellationToken) {
        let open = Arc::new(Mutex::new(Open::default()));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Some(slot) = admit(&stream, &open, &self.limits) else {
                            continue;
                        };
                        let state = Arc::clone(&state);
                        let cancel = cancel.clone();
                        let group = self.group;
                        let limits = self.limits;
                        tokio::spawn(async move {
                            let _slot = slot;
                            if let Err(e) = handle(stream, state, group, limits, cancel).await {
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

async fn handle(
    stream: UnixStream,
    state: Arc<dyn StateSource>,
    group: Option<u32>,
    limits: Limits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, write) = stream.into_split();
    let mut write = Writer {
        half: write,
        timeout: limits.write_timeout,
    };
    if !allowed(cred.uid(), cred.gid(), cred.pid(), group) {
        let msg = Response::Error {
            message: format!(
                "permission denied: uid {} is neither root nor in the agent's socket group; \
                 run as root or ask for membership of that group",
                cred.uid()
            ),
        };
        return write.send(&msg).await;
    }
    let request = match timeout(limits.request_timeout, read_request(read)).await {
        Ok(read) => read?,
        Err(_) => Err(format!(
            "no request line within {} s; send one JSON request and a newline",
            limits.request_timeout.as_secs()
        )),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => return write.send(&Response::Error { message }).await,
    };
    if let Request::Ack { id, by, note } = request {
        // Only root and the socket group got this far (`allowed`).
        let response = match acknowledge(state.as_ref(), id, by, note, cred.uid()).await {
            Ok(ack) => Response::Acked(ack),
            Err(message) => Response::Error { message },
        };
        return write.send(&response).await;
    }
    if let Request::Flows = request {
        let response = match flows(state.as_ref()).await {
            Ok(flows) => Response::Flows { flows },
            Err(message) => Response::Error { message },
        };
        return write.send(&response).await;
    }
    let response = match answer(request, state.as_ref()) {
        Some(response) => response,
        None => {
            let mut events = state.subscribe();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    ev = events.recv() => match ev {
                        Ok(ev) => write.send(&Response::Watch(ev)).await?,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "a `watch` client fell behind");
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                }
            }
        }
    };
    write.send(&response).await
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

/// Asks the engine task for the flow list.
async fn flows(state: &dyn StateSource) -> Result<Vec<FlowRow>, String> {
    let Some(tx) = state.flow_requests() else {
        return Err("this agent lists no flows".to_owned());
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let gone = || "the agent is stopping; list the flows again once it runs".to_owned();
    tx.send(FlowsCommand { reply }).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

/// Longest request line read from a peer; the rest is never read.
pub const MAX_REQUEST_LINE: u64 = 64 * 1024;

/// Reads and decodes a peer's request line (at most [`MAX_REQUEST_LINE`]
/// bytes): `Ok(Err(message))` is the error to send back.
pub async fn read_request(
    read: impl AsyncRead + Unpin,
) -> std::io::Result<Result<Request, String>> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_LINE);
    reader.read_until(b'\n', &mut line).await?;
    if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_REQUEST_LINE {
        return Ok(Err(format!(
            "bad request: longer than {} KiB; a request is one short JSON line",
            MAX_REQUEST_LINE / 1024
        )));
    }
    let Ok(text) = std::str::from_utf8(&line) else {
        return Ok(Err(
            "bad request: not UTF-8; a request is one JSON line".to_owned()
        ));
    };
    Ok(serde_json::from_str::<Request>(text.trim()).map_err(|e| bad_request(&e)))
}

/// What was wrong with a request, without quoting it: a peer's bytes never
/// come back in an answer (the CLI prints answers, and a mistaken paste can
/// hold a credential).
fn bad_request(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Data => "not a request this agent knows",
        serde_json::error::Category::Eof => "incomplete JSON",
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => "not valid JSON",
    };
    format!(
        "bad request: {what} (at column {}); send one JSON object such as {{\"cmd\":\"status\"}} and a newline",
        e.column()
    )
}

/// The answer to `request`; `None` for `watch`, which streams instead.
pub fn answer(request: Request, state: &dyn StateSource) -> Option<Response> {
    Some(match request {
        Request::Status => Response::Status(state.status()),
        Request::Stage => Response::Stage(state.stage()),
        Request::Clients => Response::Clients {
            clients: state.clients(),
        },
        // Answered by `handle` (the engine task builds the list).
        Request::Flows => Response::Error {
            message: "listing flows needs a connection to the live agent".to_owned(),
        },
        Request::Violations { since_secs } => Response::Violations {
            violations: state.violations(since_secs.map(Duration::from_secs)),
        },
        Request::Watch => return None,
        Request::Readiness { stage } => match state.readiness(stage.as_deref()) {
            Ok(view) => Response::Readiness(view),
            Err(message) => Response::Error { message },
        },
        // Answered by `handle` (it needs the caller's credentials).
        Request::Ack { .. } => Response::Error {
            message: "acknowledgements need a connection to the live agent".to_owned(),
        },
    })
}

/// The sending half, with its time limit per answer.
struct Writer {
    half: tokio::net::unix::OwnedWriteHalf,
    timeout: Duration,
}

impl Writer {
    /// Sends one answer line; a peer that does not take it within the time
    /// limit is dropped (its socket buffer is full: it stopped reading).
    async fn send(&mut self, response: &Response) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
        line.push(b'\n');
        timeout(self.timeout, self.half.write_all(&line))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the peer stopped reading its answer",
                )
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_REQUEST_LINE, acknowledge, allowed, flows, read_request};

    fn read(bytes: &[u8]) -> Result<crate::sinks::api::views::Request, String> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(read_request(bytes))
            .expect("reading a slice cannot fail")
    }

    #[test]
    fn bad_requests_get_a_sentence_not_a_dropped_connection() {
        assert!(read(b"{\"cmd\":\"status\"}\n").is_ok());
        let huge = vec![b'x'; usize::try_from(MAX_REQUEST_LINE).expect("fits") * 4];
        let e = read(&huge).expect_err("too long");
        assert!(e.contains("longer than 64 KiB"), "{e}");
        let e = read(b"\xff\xfe{\"cmd\"\n").expect_err("not UTF-8");
        assert!(e.contains("not UTF-8"), "{e}");
        let e = read(b"\0\0garbage\n").expect_err("garbage");
        assert!(e.starts_with("bad request: not valid JSON"), "{e}");
        // The peer's bytes are never quoted back.
        let e = read(b"{\"cmd\":\"secret-token-123\"}\n").expect_err("unknown");
        assert!(e.contains("not a request this agent knows"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
    }

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

    #[tokio::test]
    async fn the_flow_list_is_built_by_the_engine_task_when_asked() {
        let snap = crate::runtime::snapshot::Snapshot::new();
        let mut rx = snap.take_flow_requests().expect("the receiver, once");
        assert!(snap.take_flow_requests().is_none());
        let engine = tokio::spawn(async move {
            let cmd = rx.recv().await.expect("a request");
            cmd.reply.send(Vec::new()).expect("reply");
            // The agent stopping: the next caller hears it, not a hang.
            drop(rx);
        });
        assert_eq!(flows(&*snap).await, Ok(Vec::new()));
        engine.await.expect("engine task");
        let err = flows(&*snap).await.expect_err("engine gone");
        assert!(err.contains("the agent is stopping"), "{err}");
    }

    #[test]
    fn root_and_group_members_only() {
        assert!(allowed(0, 0, None, None));
        assert!(!allowed(1000, 1000, None, None));
        assert!(allowed(1000, 150, None, Some(150)));
        assert!(!allowed(1000, 1000, None, Some(150)));
    }
}
