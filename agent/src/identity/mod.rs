//! Who is calling: credential fingerprints and the identity of a request.
//!
//! Resolution order (implemented once, by [`Directory::identify`], over
//! lookup tables compiled from the contract):
//!
//! 1. **credential**: the fingerprint of a credential header
//!    ([`credential::fingerprint`], the one implementation of that rule)
//!    listed under a client's `credentials`;
//! 2. **client certificate**: the fingerprint of the leaf certificate the
//!    client presented in a TLS ≤ 1.2 handshake, listed under `certificates`;
//! 3. **source address**: the client's IP inside one of a client's `sources`;
//! 4. **unknown**: none of the above. The fingerprint of an unrecognised
//!    credential (or else certificate) is kept so operators can tell callers
//!    apart without ever seeing the secret.
//!
//! An unrecognised credential does not stop the search: a caller presenting
//! an unknown token from a listed client certificate or source address is
//! still that client (and `revoked_client` / `stale_credential` judge the
//! credential by its fingerprint separately).

pub mod credential;
mod fingerprint;
pub mod resolve;
pub mod token;
pub mod workload;

pub use credential::{Credential, CredentialHeaders, fingerprint as credential_fingerprint};
pub use fingerprint::{Fingerprint, FingerprintParseError, PREFIX};
pub use resolve::{Directory, Fp, Identity, KnownCredential, Presented, Via};
pub use token::TokenFacts;
