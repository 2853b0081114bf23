//! One auth model for every protocol: a JWT (`jsonwebtoken`) names a user, their roles and
//! the streams they may touch; every front-end asks [`Auth`] the same question with the
//! token from wherever its clients can put it ([`token`]).
//!
//! - [`Auth::check`] verifies a token and decides an [`Action`] on a stream.
//! - [`scope`]: the optional stream scope claim (`live/alice`, `live/*`, `*`).
//! - [`session`]: short-lived signed HLS session tokens, so segment URLs keep working for a
//!   viewer without the viewer's JWT in every segment URL.
//! - [`token`]: where tokens come from (`?token=` in an RTMP name or URL query, `Authorization:
//!   Bearer`).
//!
//! Verification pins the configured algorithm: `alg: none`, and an HS256 token signed with
//! an RSA public key (algorithm confusion), fail before any claim is read. Tokens longer than
//! [`MAX_TOKEN_BYTES`] are refused unparsed. Errors carry a stable [`AuthError::code`] and
//! never the token itself.

pub mod scope;
pub mod session;
pub mod token;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zenlive_actors::StreamKey;

use crate::config::{AuthConfig, JwtAlgorithm};
pub use scope::Scope;

/// Longest token accepted; anything longer is refused without parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A role a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including the admin API.
    Admin,
    /// Publish (and watch) streams in scope.
    Publisher,
    /// Watch streams in scope.
    Viewer,
    /// Watch, and moderate chat.
    Moderator,
}

impl Role {
    /// The role's name in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Publisher => "publisher",
            Self::Viewer => "viewer",
            Self::Moderator => "moderator",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Admin, Self::Publisher, Self::Viewer, Self::Moderator]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// What a token's bearer wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish a stream.
    Publish,
    /// Watch a stream.
    Play,
    /// Use the admin API.
    Admin,
}

impl Action {
    /// The roles that allow this action.
    fn roles(self) -> &'static [Role] {
        match self {
            Self::Publish => &[Role::Admin, Role::Publisher],
            Self::Play => &[Role::Admin, Role::Publisher, Role::Viewer, Role::Moderator],
            Self::Admin => &[Role::Admin],
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Play => "play",
            Self::Admin => "admin",
        }
    }
}

/// The claims ZenLive reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// A display name (chat shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The streams the token is good for: an exact name or a pattern; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<OneOrMany>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<OneOrMany>,
}

/// A claim that RFC 7519 lets be one string or an array of strings (`aud`; `iss` as some
/// issuers write it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl From<String> for OneOrMany {
    fn from(value: String) -> Self {
        Self::One(value)
    }
}

impl From<&str> for OneOrMany {
    fn from(value: &str) -> Self {
        Self::One(value.to_owned())
    }
}

/// Who a verified token says the bearer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The user's id (`sub`).
    pub user: String,
    /// The display name, if the token has one.
    pub name: Option<String>,
    /// The roles.
    pub roles: Vec<Role>,
    /// Seconds since the Unix epoch when the token expires.
    pub expires: u64,
    /// The token's stream scope (`live/a`, `live/*`); `None` for every stream.
    pub scope: Option<String>,
}

impl Identity {
    /// Whether the token covers `stream`.
    pub fn covers(&self, stream: &StreamKey) -> bool {
        self.scope.as_deref().is_none_or(|pattern| Scope::parse(pattern).covers(stream))
    }

    /// Whether the token covers every stream (no scope, or `*`).
    pub fn unscoped(&self) -> bool {
        self.scope.as_deref().is_none_or(|pattern| pattern == "*")
    }
}

/// Why a request was refused. `code` is stable for programs; `Display` is for people and
/// never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Auth is required and no token came.
    #[error("a token is required")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not a JWT, a bad signature, the wrong algorithm, issuer or audience, or a claim
    /// missing or malformed; the text names which (never the token).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// No role that allows the action.
    #[error("the token's roles do not allow {0}")]
    Role(&'static str),
    /// The stream is outside the token's scope.
    #[error("the token does not cover stream {0}")]
    Stream(String),
    /// A node-wide action with a token scoped to some streams.
    #[error("the token is scoped to {0}; node-wide actions need a token without a stream claim")]
    Scoped(String),
    /// The admin API needs auth configured.
    #[error("auth is not configured on this node")]
    NotConfigured,
    /// An HLS session token that is malformed, forged, or for another stream.
    #[error("invalid HLS session")]
    Session,
    /// An HLS session token past its expiry.
    #[error("HLS session expired; reload the playlist")]
    SessionExpired,
}

impl AuthError {
    /// A stable machine-readable code (also the metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::TooLarge => "token_too_large",
            Self::Invalid(_) => "token_invalid",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Role(_) => "forbidden_role",
            Self::Stream(_) => "forbidden_stream",
            Self::Scoped(_) => "forbidden_scope",
            Self::NotConfigured => "auth_not_configured",
            Self::Session => "session_invalid",
            Self::SessionExpired => "session_expired",
        }
    }

    /// Every code, for metrics that start at zero.
    pub const CODES: [&'static str; 11] = [
        "token_missing",
        "token_too_large",
        "token_invalid",
        "token_expired",
        "token_not_yet_valid",
        "forbidden_role",
        "forbidden_stream",
        "forbidden_scope",
        "auth_not_configured",
        "session_invalid",
        "session_expired",
    ];

    /// True when the bearer is known but not allowed (HTTP 403), false when the bearer is
    /// not authenticated (HTTP 401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Role(_) | Self::Stream(_) | Self::Scoped(_) | Self::NotConfigured)
    }
}

/// Why the auth configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key did not parse.
    #[error("auth key: {0}")]
    Key(jsonwebtoken::errors::Error),
    /// Asymmetric algorithm without a public key, or HMAC without a secret.
    #[error("{0}")]
    Missing(&'static str),
}

/// Verifies tokens and decides actions. See the module docs.
pub struct Auth {
    algorithm: Algorithm,
    decoding: Option<DecodingKey>,
    encoding: Option<EncodingKey>,
    validation: Validation,
    require_publish: bool,
    require_play: bool,
    sessions: session::Sessions,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Auth")
            .field("algorithm", &self.algorithm)
            .field("configured", &self.decoding.is_some())
            .field("require_publish", &self.require_publish)
            .field("require_play", &self.require_play)
            .finish()
    }
}

fn read(path: &str) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(path).map_err(|source| AuthSetupError::Read { path: path.to_owned(), source })
}

impl Auth {
    /// Builds from `[auth]`. Auth is configured when a secret or a public key is set; it is
    /// required for publish and play only when `require_publish` / `require_play` say so.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let algorithm = match config.algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Hs384 => Algorithm::HS384,
            JwtAlgorithm::Hs512 => Algorithm::HS512,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Rs384 => Algorithm::RS384,
            JwtAlgorithm::Rs512 => Algorithm::RS512,
            JwtAlgorithm::Es256 => Algorithm::ES256,
            JwtAlgorithm::Es384 => Algorithm::ES384,
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
        };
        let hmac = matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let (decoding, encoding) = if hmac {
            match config.jwt_secret.as_bytes() {
                [] => (None, None),
                secret => {
                    (Some(DecodingKey::from_secret(secret)), Some(EncodingKey::from_secret(secret)))
                }
            }
        } else {
            let public = match config.public_key.as_str() {
                "" => {
                    return Err(AuthSetupError::Missing(
                        "auth.public_key is required for asymmetric algorithms",
                    ))
                }
                path => read(path)?,
            };
            let decoding = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&public),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&public),
                _ => DecodingKey::from_rsa_pem(&public),
            }
            .map_err(AuthSetupError::Key)?;
            let encoding = match config.private_key.as_str() {
                "" => None,
                path => {
                    let private = read(path)?;
                    Some(
                        match algorithm {
                            Algorithm::ES256 | Algorithm::ES384 => {
                                EncodingKey::from_ec_pem(&private)
                            }
                            Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
                            _ => EncodingKey::from_rsa_pem(&private),
                        }
                        .map_err(AuthSetupError::Key)?,
                    )
                }
            };
            (Some(decoding), encoding)
        };
        if decoding.is_none() && (config.require_publish || config.require_play) {
            return Err(AuthSetupError::Missing(
                "auth.require_publish / auth.require_play need auth.jwt_secret (or a public key)",
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        if config.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&config.issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        Ok(Self {
            algorithm,
            decoding,
            encoding,
            validation,
            require_publish: config.require_publish,
            require_play: config.require_play,
            sessions: session::Sessions::new(config.session_ttl.as_secs()),
        })
    }

    /// Auth that is off: every publish and play is allowed, the admin API is closed.
    pub fn disabled() -> Self {
        Self::new(&AuthConfig::default()).expect("the default auth config is valid")
    }

    /// Whether tokens can be verified at all (a secret or public key is configured).
    pub fn configured(&self) -> bool {
        self.decoding.is_some()
    }

    /// Whether `action` needs a token.
    pub fn required(&self, action: Action) -> bool {
        match action {
            Action::Publish => self.require_publish,
            Action::Play => self.require_play,
            Action::Admin => true,
        }
    }

    /// Signs HLS sessions with a key derived from the cluster's `secret`, so any node of
    /// the cluster accepts a session another issued.
    pub fn share_sessions(&mut self, ttl: u64, secret: &str) {
        self.sessions = session::Sessions::shared(ttl, secret);
    }

    /// Keeps `previous`'s HLS session key (with this configuration's TTL), so a reloaded
    /// auth accepts the sessions issued before it.
    pub fn keep_sessions_of(&mut self, previous: &Auth) {
        self.sessions = previous.sessions.with_ttl(self.sessions.ttl());
    }

    /// HLS session tokens.
    pub fn sessions(&self) -> &session::Sessions {
        &self.sessions
    }

    /// Verifies `token` (if any) and decides whether its bearer may do `action` on
    /// `stream`, or on the whole node when `stream` is `None` (which a token scoped to some
    /// streams may not). Answers the identity when a token was given and valid, `None` when
    /// none was needed and none came.
    pub fn check(
        &self,
        token: Option<&str>,
        action: Action,
        stream: Option<&StreamKey>,
    ) -> Result<Option<Identity>, AuthError> {
        let identity = self.check_role(token, action)?;
        if let Some(identity) = &identity {
            match stream {
                Some(stream) if !identity.covers(stream) => {
                    return Err(AuthError::Stream(stream.to_string()))
                }
                None if !identity.unscoped() => {
                    return Err(AuthError::Scoped(identity.scope.clone().unwrap_or_default()))
                }
                _ => {}
            }
        }
        Ok(identity)
    }

    /// Like [`Auth::check`], but leaves the token's scope to the caller (for listings that
    /// show only what the token covers, with [`Identity::covers`]).
    pub fn check_role(
        &self,
        token: Option<&str>,
        action: Action,
    ) -> Result<Option<Identity>, AuthError> {
        let token = token.filter(|t| !t.is_empty());
        let Some(token) = token else {
            return match (self.required(action), action) {
                (_, Action::Admin) if !self.configured() => Err(AuthError::NotConfigured),
                (true, _) => Err(AuthError::Missing),
                (false, _) => Ok(None),
            };
        };
        if action == Action::Admin && !self.configured() {
            return Err(AuthError::NotConfigured);
        }
        let Some(key) = &self.decoding else {
            // Auth is off: a token is ignored rather than refused, so clients that always
            // send one keep working.
            return Ok(None);
        };
        let claims = self.verify(token, key)?;
        if !claims.roles.iter().any(|r| action.roles().contains(r)) {
            return Err(AuthError::Role(action.as_str()));
        }
        Ok(Some(Identity {
            user: claims.sub,
            name: claims.name,
            roles: claims.roles,
            expires: claims.exp,
            scope: claims.stream,
        }))
    }

    fn verify(&self, token: &str, key: &DecodingKey) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let invalid = |why: String| AuthError::Invalid(why);
        if let Err(error) = jsonwebtoken::decode_header(token) {
            return Err(invalid(self.bad_header(token, &error)));
        }
        // Claims as JSON first (signature, exp, nbf, iss, aud checked), then ours, so an
        // error can name the claim it is about.
        let claims = match jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation) {
            Ok(data) => data.claims,
            Err(error) => {
                return Err(match error.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidSignature => invalid("bad signature".into()),
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => invalid(
                        format!("algorithm not accepted (this node takes {:?})", self.algorithm),
                    ),
                    ErrorKind::InvalidIssuer => invalid("wrong issuer (iss)".into()),
                    ErrorKind::InvalidAudience => invalid("wrong audience (aud)".into()),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        invalid(format!("the {claim} claim is missing"))
                    }
                    ErrorKind::InvalidClaimFormat(claim) => {
                        invalid(format!("the {claim} claim is malformed"))
                    }
                    ErrorKind::Json(error) => invalid(format!("the claims are not JSON: {error}")),
                    _ => invalid("not a JWT (header.claims.signature, base64url)".into()),
                })
            }
        };
        serde_path_to_error::deserialize::<_, Claims>(claims).map_err(|error| {
            let claim = error.path().to_string();
            let inner = error.into_inner();
            if claim == "." {
                invalid(format!("malformed claims: {inner}"))
            } else {
                invalid(format!("the {claim} claim is malformed: {inner}"))
            }
        })
    }

    /// Why a token's header was refused: `alg: none` said as such.
    fn bad_header(&self, token: &str, error: &jsonwebtoken::errors::Error) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let alg = token
            .split('.')
            .next()
            .and_then(|head| URL_SAFE_NO_PAD.decode(head).ok())
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .and_then(|head| head.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
        match alg {
            Some(alg) if alg.eq_ignore_ascii_case("none") => {
                "unsigned tokens (alg none) are not accepted".into()
            }
            Some(alg) => {
                format!("algorithm {alg:?} not accepted (this node takes {:?})", self.algorithm)
            }
            None => format!("not a JWT: {error}"),
        }
    }

    /// Signs `claims` with the configured key (for `zenlive token` and tests). Fails when
    /// only a public key is configured.
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            "no signing key: set auth.jwt_secret (HMAC) or auth.private_key".to_owned()
        })?;
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, key).map_err(|e| e.to_string())
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
