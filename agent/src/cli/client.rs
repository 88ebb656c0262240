//! The API client: `rampwatch status|stage|clients|flows|violations|watch|readiness`.

use std::{
    io::{BufRead as _, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use super::{OutputFormat, render};
use crate::sinks::api::views::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no agent answers on {path}: {source}; is `rampwatch agent` running? (pass --socket if it listens elsewhere)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "permission denied on {path}: the agent's socket is for root and its --socket-group; run as root or ask to join that group"
    )]
    Denied { path: PathBuf },
    #[error("talking to the agent on {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("the agent on {path} closed the connection without answering; check its log")]
    NoAnswer { path: PathBuf },
    #[error("the agent sent an answer this CLI does not understand: {0}")]
    Protocol(#[source] serde_json::Error),
    #[error("the agent refused: {0}")]
    Refused(String),
}

impl ClientError {
    /// The reader of our output went away (`rampwatch flows | head`): not
    /// an error worth a message.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Sends `request`; prints the answer (every answer, for `watch`) to `out`.
/// Returns the (last) answer, for commands whose exit code depends on it.
pub fn query(
    socket: &Path,
    request: &Request,
    output: OutputFormat,
    out: &mut dyn Write,
) -> Result<Option<Response>, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::Denied {
                path: socket.to_owned(),
            }
        } else {
            ClientError::Connect {
                path: socket.to_owned(),
                source,
            }
        }
    })?;
    let mut line = serde_json::to_vec(request).map_err(ClientError::Protocol)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let reader = BufReader::new(stream);
    let mut first = true;
    let mut last = None;
    for line in reader.lines() {
        let line = line.map_err(io)?;
        let response: Response = serde_json::from_str(&line).map_err(ClientError::Protocol)?;
        if let Response::Error { message } = response {
            return Err(ClientError::Refused(message));
        }
        match output {
            OutputFormat::Json => render::json(&response, out),
            OutputFormat::Table => render::table(&response, first, out),
        }
        .and_then(|()| out.flush())
        .map_err(ClientError::Output)?;
        first = false;
        if !matches!(request, Request::Watch) {
            last = Some(response);
            break;
        }
    }
    if first && !matches!(request, Request::Watch) {
        return Err(ClientError::NoAnswer {
            path: socket.to_owned(),
        });
    }
    Ok(last)
}
