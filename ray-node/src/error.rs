//! What starting a node, or reading its token and records, can fail with.

/// A node could not start (or its token or records could not be read).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad options.
    #[error("{0}")]
    InvalidArgument(String),
    /// A server could not listen.
    #[error("{what} cannot listen on {address}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// Where it tried.
        address: String,
        /// Why not.
        source: std::io::Error,
    },
    /// The object store could not be created.
    #[error("creating the object store: {0}")]
    Store(String),
    /// The head did not answer, or failed the registration.
    #[error("cannot join the head at {address}: {reason}")]
    HeadUnreachable {
        /// The head's address as given.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The head refused this node's token.
    #[error(
        "the head at {address} refused this node's auth token ({reason}): give it the head's \
         token (RAY_AUTH_TOKEN, or the file ~/.rayrs/auth_token; `rayrs get-auth-token` on the \
         head prints it)"
    )]
    TokenRefused {
        /// The head's address.
        address: String,
        /// The head's answer.
        reason: String,
    },
    /// The node's record in its temp dir could not be written.
    #[error("writing the node's record: {0}")]
    Records(String),
    /// The head's dashboard could not start.
    #[error(transparent)]
    Dashboard(#[from] ray_dashboard::DashboardError),
    /// No token, or a token file that cannot be used.
    #[error("{0}")]
    Token(String),
}
