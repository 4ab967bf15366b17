//! shardgrid::auth: checking the JWTs of `AUTH` messages (PROTOCOL §3.1) and what a connection
//! knows about its principal afterwards. Only HS256 with the configured secret is accepted; the
//! algorithm is fixed by the server, never taken from the token header.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock leeway for `exp` and `nbf`.
pub const TOKEN_LEEWAY_SECS: u64 = 60;

/// Who a connection is, once authenticated. Lives on the connection's shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Option<String>,
    pub roles: Vec<String>,
}

impl Principal {
    /// The principal of a connection on a `--no-auth` server that sent no usable token.
    pub fn anonymous() -> Principal {
        Principal { user_id: None, roles: Vec::new() }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Option<Vec<serde_json::Value>>,
}

/// Why a token was refused. The text goes into `AUTH_FAIL.error`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm not allowed (only HS256)")]
    WrongAlgorithm,
    #[error("token is missing a required claim: {0}")]
    MissingClaim(String),
    #[error("malformed token")]
    Malformed,
}

/// Verifies tokens against one HS256 secret. Built once at start-up; each shard holds a clone.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier(HS256)")
    }
}

impl TokenVerifier {
    pub fn hs256(secret: &[u8]) -> TokenVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = TOKEN_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenVerifier { key: DecodingKey::from_secret(secret), validation }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            _ => AuthError::Malformed,
        })?;
        // PROTOCOL §3.1: non-string roles are ignored.
        let roles = data
            .claims
            .roles
            .unwrap_or_default()
            .into_iter()
            .filter_map(|role| role.as_str().map(str::to_string))
            .collect();
        Ok(Principal { user_id: Some(data.claims.sub), roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";

    fn token(header: Header, claims: serde_json::Value, secret: &[u8]) -> String {
        encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn far_future() -> u64 {
        4_102_444_800
    }

    // The golden vector's token (secret "vector-test-secret") verifies and yields sub and roles.
    #[test]
    fn accepts_the_vector_token() {
        let verifier = TokenVerifier::hs256(b"vector-test-secret");
        let principal = verifier.verify("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEiLCJyb2xlcyI6WyJVU0VSIl0sImlhdCI6MTcxNzE3MTcxNywiZXhwIjo0MTAyNDQ0ODAwfQ.VTXNsosQbgXaUGmu5pkLXUp8ejQqjOhK28zWFtqHwWg").unwrap();
        assert_eq!(principal.user_id.as_deref(), Some("user-1"));
        assert_eq!(principal.roles, vec!["USER".to_string()]);
    }

    // Each way a token can be wrong is refused with its own reason.
    #[test]
    fn refuses_bad_tokens() {
        let verifier = TokenVerifier::hs256(SECRET);
        let good = json!({"sub": "u", "exp": far_future(), "roles": ["A", 3]});
        assert_eq!(verifier.verify(&token(Header::default(), good.clone(), SECRET)).unwrap().roles, vec!["A"]);
        assert_eq!(verifier.verify(&token(Header::default(), good.clone(), b"other")), Err(AuthError::BadSignature));
        let expired = json!({"sub": "u", "exp": 1_000});
        assert_eq!(verifier.verify(&token(Header::default(), expired, SECRET)), Err(AuthError::Expired));
        let no_exp = json!({"sub": "u"});
        assert!(matches!(verifier.verify(&token(Header::default(), no_exp, SECRET)), Err(AuthError::MissingClaim(_))));
        let no_sub = json!({"exp": far_future()});
        assert!(verifier.verify(&token(Header::default(), no_sub, SECRET)).is_err());
        let later = json!({"sub": "u", "exp": far_future(), "nbf": far_future() - 10});
        assert_eq!(verifier.verify(&token(Header::default(), later, SECRET)), Err(AuthError::NotYetValid));
        let hs512 = token(Header::new(Algorithm::HS512), good, SECRET);
        assert_eq!(verifier.verify(&hs512), Err(AuthError::WrongAlgorithm));
        assert_eq!(verifier.verify("not a token"), Err(AuthError::Malformed));
        // alg "none": header {"alg":"none"} with an empty signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        assert!(verifier.verify(none).is_err());
    }
}
